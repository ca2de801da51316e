"""``timm-fer serve``'s guards: no empty API key, the live WebSocket only for the server's own pages (and the
``--cors-origin`` ones), and each refused WebSocket told why with the status the docs give (401, 403, 429)."""
import asyncio
import socket
import threading
import time

import pytest
from drawn_faces import stub_face

pytest.importorskip('fastapi', reason='the serve extra (FastAPI) is not installed')
from fastapi.testclient import TestClient  # noqa: E402
from starlette.testclient import WebSocketDenialResponse  # noqa: E402

from timm_fer.cli import main  # noqa: E402
from timm_fer.errors import ConfigError  # noqa: E402
from timm_fer.inference.classifier import load_classifier  # noqa: E402
from timm_fer.serve import ServeLimits, create_app  # noqa: E402
from timm_fer.serve.app import same_origin  # noqa: E402

pytestmark = pytest.mark.usefixtures('offline_hub')


def one_face(image) -> list:
    return [stub_face(10, 10, 1.)]


@pytest.fixture(scope='module')
def classifier(model):
    return load_classifier(model=model, threads=1)


@pytest.fixture()
def no_model(monkeypatch):
    """The command must stop before it loads a model or starts a server."""
    import uvicorn

    import timm_fer.inference.classifier as classifier_module
    monkeypatch.setattr(classifier_module, 'load_model', lambda *args, **kwargs: pytest.fail('the model loaded'))
    monkeypatch.setattr(uvicorn, 'run', lambda *args, **kwargs: pytest.fail('the server started'))


@pytest.mark.parametrize('key', ['', '   '])
def test_an_empty_api_key_is_refused_in_one_line(key, no_model, monkeypatch, capsys):
    monkeypatch.delenv('TIMM_FER_API_KEY', raising=False)
    assert main(['serve', '--api-key', key]) == 2
    assert capsys.readouterr().err == (
        'timm-fer serve: error: --api-key is empty, which would leave the API open to anyone: give a key (e.g. '
        'TIMM_FER_API_KEY=$(openssl rand -hex 16)), or leave --api-key out to serve without one.\n')
    monkeypatch.setenv('TIMM_FER_API_KEY', key)
    assert main(['serve']) == 2
    assert capsys.readouterr().err.startswith('timm-fer serve: error: $TIMM_FER_API_KEY is empty, which would leave '
                                              'the API open to anyone: ')


def test_create_app_refuses_an_empty_key(classifier):
    with pytest.raises(ConfigError, match="^api_key is empty, which would leave the API open to anyone: give a key, "
                                          "or None to serve without one.$"):
        create_app(classifier, detector=one_face, api_key='')


@pytest.mark.parametrize('origin, host, same', [
    ('http://127.0.0.1:8000', '127.0.0.1:8000', True),
    ('http://LOCALHOST:8000', 'localhost:8000', True),
    ('https://example.org', 'example.org:443', True),
    ('http://example.org', 'example.org', True),
    ('http://[::1]:8000', '[::1]:8000', True),
    ('http://127.0.0.1:8001', '127.0.0.1:8000', False),
    ('https://example.org', 'example.org', True),  # behind a TLS proxy the Host has no port
    ('http://evil.example', '127.0.0.1:8000', False),
    ('null', '127.0.0.1:8000', False),
    ('file://', 'localhost', False),
    ('http://127.0.0.1:x', '127.0.0.1:8000', False),
    ('http://127.0.0.1:8000', '', False),
])
def test_same_origin(origin, host, same):
    assert same_origin(origin, host) is same


def refusal(client: TestClient, url: str = '/v1/live', **headers: str) -> WebSocketDenialResponse:
    with pytest.raises(WebSocketDenialResponse) as refused:
        with client.websocket_connect(url, headers=headers):
            pass
    return refused.value


def test_live_takes_only_its_own_pages_the_cors_origins_and_clients_without_origin(classifier):
    with TestClient(create_app(classifier, detector=one_face)) as client:
        for headers in ({}, {'Origin': 'http://testserver'}):
            with client.websocket_connect('/v1/live', headers=headers):
                pass
        refused = refusal(client, Origin='https://evil.example')
        assert refused.status_code == 403 and refused.json()['detail'] == (
            "pages from https://evil.example may not open this live WebSocket, only the server's own pages; start it "
            'with --cors-origin https://evil.example to let them.')
    with TestClient(create_app(classifier, detector=one_face, cors_origins=['https://app.example.org'])) as client:
        with client.websocket_connect('/v1/live', headers={'Origin': 'https://app.example.org'}):
            pass
        assert refusal(client, Origin='https://other.example.org').status_code == 403
    with TestClient(create_app(classifier, detector=one_face, cors_origins=['*'])) as client:
        with client.websocket_connect('/v1/live', headers={'Origin': 'https://any.example'}):
            pass


def test_a_refused_live_connection_gets_401_or_429_with_retry_after(classifier):
    app = create_app(classifier, detector=one_face, api_key='k', limits=ServeLimits(max_in_flight=1, retry_after=7))
    with TestClient(app) as client:
        for url in ('/v1/live', '/v1/live?key=wrong'):
            refused = refusal(client, url)
            assert refused.status_code == 401 and refused.json()['detail'] == (
                'this server needs its API key as the query parameter ?key=; ask whoever started it for the key.')
        assert refusal(client, '/v1/live?key=k', Origin='https://evil.example').status_code == 403
        with client.websocket_connect('/v1/live?key=k'):
            busy = refusal(client, '/v1/live?key=k')
            assert busy.status_code == 429 and busy.headers['retry-after'] == '7'
            assert busy.json()['detail'] == '1 live connections, this server\'s limit (--max-in-flight); retry after 7 s.'
        with client.websocket_connect('/v1/live?key=k'):
            pass


def test_a_server_without_the_denial_response_closes_with_the_code_and_reason(classifier):
    app = create_app(classifier, detector=one_face, api_key='k')
    sent: list = []

    async def receive() -> dict:
        return {'type': 'websocket.connect'}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {'type': 'websocket', 'path': '/v1/live', 'raw_path': b'/v1/live', 'query_string': b'', 'root_path': '',
             'headers': [(b'host', b'testserver')], 'scheme': 'ws', 'subprotocols': [], 'extensions': {}}
    asyncio.run(app(scope, receive, send))
    assert sent == [{'type': 'websocket.close', 'code': 1008, 'reason': 'this server needs its API key as the query '
                                                                        'parameter ?key=; ask whoever started it for '
                                                                        'the key.'}]


def test_uvicorn_sends_the_refusals_over_the_wire(classifier):
    import uvicorn
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(classifier, detector=one_face, api_key='k'), host='127.0.0.1',
                                           port=port, log_level='warning'))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        for url, origin, status, said in ((f'ws://127.0.0.1:{port}/v1/live', None, 401, b'?key='),
                                          (f'ws://127.0.0.1:{port}/v1/live?key=k', 'https://evil.example', 403,
                                           b'--cors-origin https://evil.example')):
            with pytest.raises(InvalidStatus) as refused:
                connect(url, origin=origin, open_timeout=10)
            assert refused.value.response.status_code == status and said in refused.value.response.body
        with connect(f'ws://127.0.0.1:{port}/v1/live?key=k', origin=f'http://127.0.0.1:{port}', open_timeout=10):
            pass
    finally:
        server.should_exit = True
        thread.join(30)
