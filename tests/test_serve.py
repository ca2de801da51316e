"""``timm-fer serve``: the REST API, its limits and safety defaults, micro-batching, and the live WebSocket.

The application runs in-process through FastAPI's TestClient (no socket), with a tiny random TransFER and stand-in
detectors; one slow test starts the real command on a free loopback port.
"""
import asyncio
import base64
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import pytest
from drawn_faces import draw_face, stub_face
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

pytest.importorskip('fastapi', reason='the serve extra (FastAPI) is not installed')
from fastapi import WebSocketDisconnect  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from timm_fer.cli import main  # noqa: E402
from timm_fer.constants import SERVED_MODELS  # noqa: E402
from timm_fer.errors import ConfigError  # noqa: E402
from timm_fer.inference.classifier import load_classifier  # noqa: E402
from timm_fer.serve import API_KEY_HEADER, BatchingClassifier, ServeLimits, create_app  # noqa: E402
from timm_fer.serve.app import STATIC_DIR  # noqa: E402
from timm_fer.serve.live import LiveSession  # noqa: E402

pytestmark = pytest.mark.usefixtures('offline_hub')

FACE_WIDTH = 130
"""Width in pixels of each face column of the test photos: :func:`faces_by_width` finds width // 130 faces."""


def faces_by_width(image: Image.Image) -> list:
    """A stand-in detector: one 112-pixel face per 130-pixel column of the image."""
    return [stub_face(10 + FACE_WIDTH * i, 10, 1.) for i in range(image.width // FACE_WIDTH)]


def photo(faces: int, colour: int = 0, image_format: str = 'PNG') -> bytes:
    """A photo in which :func:`faces_by_width` finds ``faces`` faces (none: a photo too narrow for one); ``colour``
    tints it, so that photos with the same face count give different probabilities."""
    width = max(FACE_WIDTH * faces + 10, 60)
    image = draw_face(240).resize((width, 140))
    tint = Image.new('RGB', image.size, ((60 * colour) % 256, (110 * colour) % 256, (170 * colour) % 256))
    buffer = io.BytesIO()
    Image.blend(image, tint, 0.4).save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.fixture(scope='module')
def classifier(model):
    return load_classifier(model=model, threads=1)


@pytest.fixture()
def temp_root(tmp_path) -> Path:
    """The folder the server's upload folders go to, so that the tests can see they are removed."""
    folder = tmp_path / 'uploads'
    folder.mkdir()
    return folder


@pytest.fixture()
def client(classifier, temp_root):
    with TestClient(create_app(classifier, detector=faces_by_width, temp_dir=temp_root)) as test_client:
        yield test_client


def predict(client: TestClient, *files: bytes, names: List[str] = None, **fields) -> 'httpx.Response':  # noqa: F821
    names = names or [f'photo{i}.png' for i in range(len(files))]
    return client.post('/v1/predict', files=[('file', (n, f, 'image/png')) for n, f in zip(names, files)],
                       data={k: str(v) for k, v in fields.items()})


def test_health_models_docs_and_page(client, classifier):
    assert client.get('/healthz').json() == {'status': 'ok'}
    assert client.get('/v1/models').json() == {'models': [{
        'name': classifier.model_name, 'labels': classifier.labels, 'input_size': [3, 112, 112],
        'weights': classifier.weights, 'backend': 'torch', 'description': classifier.description}],
        'default': classifier.model_name}
    assert '/v1/predict' in client.get('/openapi.json').json()['paths']
    docs = client.get('/docs')
    sources = re.findall(r'(?:src|href)="([^"]+)"', docs.text) + re.findall(r"url: '([^']+)'", docs.text)
    assert docs.status_code == 200 and sources, docs.text
    assert all(source.startswith(('/', 'data:')) for source in sources), sources  # nothing from a CDN: offline
    for source in sources:
        if source.startswith('/'):
            assert client.get(source).status_code == 200, source
    assert client.get('/redoc').status_code == 404
    page, index = client.get('/'), STATIC_DIR / 'index.html'
    if index.is_file():
        assert page.status_code == 200 and page.content == index.read_bytes()
    else:
        assert page.status_code == 404 and 'the web page is not installed' in page.json()['detail']


def test_predict_gives_each_photo_its_faces_top_k_and_annotated_image(client, classifier):
    answer = predict(client, photo(2), photo(0), names=['two.png', 'none.png'], top_k=2, annotate='true')
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body['model'] == classifier.model_name and body['labels'] == classifier.labels
    two, none = body['images']
    assert (two['file'], two['width'], two['height'], two['skipped']) == ('two.png', 270, 140, None)
    assert [f['box'] for f in two['faces']] == [[10, 10, 122, 122], [140, 10, 252, 122]]
    for face in two['faces']:
        assert face['detector_score'] == 0.99 and list(face['probabilities']) == classifier.labels
        assert sum(face['probabilities'].values()) == pytest.approx(1, abs=1e-5)
        assert face['expression'] == max(face['probabilities'], key=face['probabilities'].get)
        assert [label for label, _ in face['top_k']] == sorted(
            face['probabilities'], key=face['probabilities'].get, reverse=True)[:2]
        assert 'explanation' not in face
    assert none['faces'] == [] and none['skipped'].startswith('no face found')
    header, _, data = two['annotated'].partition(',')
    assert header == 'data:image/jpeg;base64'
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (270, 140)
    assert 'top_k' not in predict(client, photo(1)).json()['images'][0]['faces'][0]


def test_explanations_need_the_eager_fp32_model(model, temp_root):
    int8 = load_classifier(model=model, threads=1, int8=True)  # like ONNX Runtime, it cannot explain
    with TestClient(create_app(int8, detector=faces_by_width, temp_dir=temp_root)) as client:
        refused = predict(client, photo(1), explain='true')
    assert refused.status_code == 400 and 'start the server with --explain' in refused.json()['detail']
    explaining = load_classifier(model=model, threads=1, explain=True)
    with TestClient(create_app(explaining, detector=faces_by_width, temp_dir=temp_root)) as explained:
        face = predict(explained, photo(1), explain='true').json()['images'][0]['faces'][0]
    header, _, data = face['explanation'].partition(',')
    assert header == 'data:image/png;base64' and Image.open(io.BytesIO(base64.b64decode(data))).format == 'PNG'
    assert list(temp_root.iterdir()) == []


def test_bad_input_gets_a_one_line_4xx(client):
    cases = {
        'broken image': (predict(client, b'not an image at all', names=['broken.jpg']), 400, "'broken.jpg': not an"),
        'JSON body': (client.post('/v1/predict', json={'file': 'x'}), 415, 'multipart/form-data'),
        'text part': (client.post('/v1/predict', files={'file': ('a.txt', b'hello', 'text/plain')}), 415,
                      "part 'a.txt' is text/plain"),
        'no file part': (client.post('/v1/predict', files={'image': ('a.png', photo(1), 'image/png')}), 422,
                         "no part named 'file'"),
        'top_k too large': (predict(client, photo(1), top_k=99), 422, 'top_k is between 1 and the 7 labels'),
        'top_k not a number': (predict(client, photo(1), top_k='two'), 422, 'top_k'),
        'annotate not a flag': (predict(client, photo(1), annotate='maybe'), 422, 'annotate is true or false'),
        'fps zero': (client.post('/v1/predict/video', files={'file': ('c.mp4', b'x', 'video/mp4')},
                                 data={'fps': '0'}), 422, 'fps is a number in (0, 30]'),
        'image as video': (client.post('/v1/predict/video', files={'file': ('c.png', photo(1), 'image/png')}), 415,
                           'not a video'),
        'not a video': (client.post('/v1/predict/video', files={'file': ('c.mp4', b'x' * 100, 'video/mp4')}), 400,
                        "'c.mp4': not a video"),
    }
    for case, (answer, status, detail) in cases.items():
        assert answer.status_code == status, (case, answer.text)
        assert detail in answer.json()['detail'] and '\n' not in answer.json()['detail'], case


def test_a_detector_failure_is_the_images_skipped_reason(classifier, temp_root):
    def broken_detector(image: Image.Image) -> list:
        raise RuntimeError('the detector broke')

    with TestClient(create_app(classifier, detector=broken_detector, temp_dir=temp_root)) as client:
        answer = predict(client, photo(1))
    assert answer.status_code == 200 and answer.json()['images'][0]['skipped'] == (
        'face detection or alignment failed (RuntimeError: the detector broke)')


def test_upload_pixel_and_file_count_limits(classifier, temp_root):
    limits = ServeLimits(max_upload_mb=0.05, max_megapixels=0.028, max_files=2)
    with TestClient(create_app(classifier, detector=faces_by_width, limits=limits, temp_dir=temp_root)) as client:
        assert predict(client, photo(1)).status_code == 200
        big = predict(client, photo(1), photo(1, image_format='BMP'))  # declared size above 0.05 MB
        assert big.status_code == 413 and '0.05 MB' in big.json()['detail']
        chunks = (photo(1, c, 'BMP') for c in range(3))  # streamed without a declared size
        streamed = client.post('/v1/predict', content=chunks,
                               headers={'content-type': 'multipart/form-data; boundary=xyz'})
        assert streamed.status_code == 413 and '0.05 MB' in streamed.json()['detail']
        wide = predict(client, photo(2), names=['wide.png'])
        assert wide.status_code == 413 and "'wide.png' is 270x140" in wide.json()['detail']
        many = predict(client, photo(0), photo(0), photo(0))
        assert many.status_code == 413 and '3 files in one request' in many.json()['detail']
    assert list(temp_root.iterdir()) == []


def test_requests_beyond_the_limit_in_flight_get_429_with_retry_after(classifier, temp_root):
    entered, release = threading.Event(), threading.Event()

    def slow_detector(image: Image.Image) -> list:
        entered.set()
        assert release.wait(30)
        return faces_by_width(image)

    app = create_app(classifier, detector=slow_detector,
                     limits=ServeLimits(max_in_flight=1, queue_size=0, retry_after=3), temp_dir=temp_root)
    with TestClient(app) as client:
        first: list = []
        worker = threading.Thread(target=lambda: first.append(predict(client, photo(1))))
        worker.start()
        try:
            assert entered.wait(30)
            refused = predict(client, photo(1))
            assert refused.status_code == 429 and refused.headers['Retry-After'] == '3'
            assert 'retry after 3 s' in refused.json()['detail']
            assert client.get('/v1/models').status_code == 200  # only uploads count
        finally:
            release.set()
            worker.join(30)
        assert first[0].status_code == 200 and len(first[0].json()['images'][0]['faces']) == 1
        assert predict(client, photo(1)).status_code == 200


def test_api_key_guards_the_api_but_not_health(classifier, temp_root):
    with TestClient(create_app(classifier, detector=faces_by_width, api_key='s3cret', temp_dir=temp_root)) as client:
        assert client.get('/healthz').status_code == 200
        for answer in (client.get('/v1/models'), predict(client, photo(1)),
                       client.get('/v1/models', headers={API_KEY_HEADER: 'wrong'})):
            assert answer.status_code == 401 and API_KEY_HEADER in answer.json()['detail']
        assert client.get('/v1/models', headers={API_KEY_HEADER: 's3cret'}).status_code == 200


def test_cors_headers_only_for_the_given_origins(client, classifier, temp_root):
    origin = {'Origin': 'https://example.org'}
    assert 'access-control-allow-origin' not in client.get('/v1/models', headers=origin).headers
    app = create_app(classifier, detector=faces_by_width, cors_origins=['https://example.org'], temp_dir=temp_root)
    with TestClient(app) as allowed:
        assert allowed.get('/v1/models', headers=origin).headers['access-control-allow-origin'] == \
            'https://example.org'
        other = allowed.get('/v1/models', headers={'Origin': 'https://elsewhere.net'})
        assert 'access-control-allow-origin' not in other.headers


def test_a_file_name_never_becomes_a_path_and_uploads_are_removed(client, temp_root, tmp_path):
    names = ['../../etc/passwd', '/tmp/x.png', '..', 'a/../../b.png']
    answer = predict(client, *(photo(1) for _ in names), names=names)
    assert answer.status_code == 200
    assert [image['file'] for image in answer.json()['images']] == names
    assert list(temp_root.iterdir()) == [] and not (tmp_path / 'etc').exists()
    broken = predict(client, photo(1), b'broken', names=['fine.png', '../../broken.png'])
    assert broken.status_code == 400 and list(temp_root.iterdir()) == []


def test_concurrent_requests_each_get_their_own_answer(classifier, temp_root):
    requests = [(faces, colour) for colour in range(3) for faces in (0, 1, 2, 3)]
    answers: dict = {}
    app = create_app(classifier, detector=faces_by_width, limits=ServeLimits(max_in_flight=len(requests)),
                     temp_dir=temp_root)
    with TestClient(app) as client:
        def send(faces: int, colour: int) -> None:
            answers[faces, colour] = predict(client, photo(faces, colour), names=[f'{faces}-{colour}.png'])

        threads = [threading.Thread(target=send, args=request) for request in requests]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    for (faces, colour), answer in answers.items():
        assert answer.status_code == 200, answer.text
        image = answer.json()['images'][0]
        assert image['file'] == f'{faces}-{colour}.png' and len(image['faces']) == faces
        crops, _ = classifier.crop_faces(Path('x'), Image.open(io.BytesIO(photo(faces, colour))).convert('RGB'),
                                         faces_by_width, 32.)
        for face, alone in zip(image['faces'], classifier(crops) if crops else []):
            assert face['probabilities'] == pytest.approx(alone.probabilities, abs=1e-5)
    assert len(answers) == len(requests)


def crops_of(classifier, count: int, colour: int) -> list:
    image = Image.open(io.BytesIO(photo(count, colour))).convert('RGB')
    return classifier.crop_faces(Path(f'{count}-{colour}.png'), image, faces_by_width, 32.)[0]


@settings(max_examples=10)
@given(faces=st.lists(st.integers(0, 4), min_size=1, max_size=6), max_batch=st.integers(1, 6),
       delays=st.lists(st.sampled_from([0., 0.001, 0.003]), min_size=6, max_size=6))
def test_batching_gives_every_caller_its_own_predictions(classifier, faces, max_batch, delays):
    inputs = [crops_of(classifier, count, colour) for colour, count in enumerate(faces)]
    expected = [classifier(crops) if crops else [] for crops in inputs]
    results: dict = {}
    with BatchingClassifier(classifier, max_batch=max_batch, max_wait_ms=2) as batching:
        def call(index: int) -> None:
            time.sleep(delays[index])
            results[index] = batching(inputs[index])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    for index, predictions in enumerate(expected):
        got = results[index]
        assert [(p.file, p.face, p.box) for p in got] == [(p.file, p.face, p.box) for p in predictions]
        for mine, alone in zip(got, predictions):
            assert mine.probabilities == pytest.approx(alone.probabilities, abs=1e-5)


def test_batching_shares_forward_passes_and_keeps_failures_to_their_caller(model):
    counted = load_classifier(model=model, threads=1)
    calls: List[int] = []
    runner = counted.model

    def counting(images):
        calls.append(len(images))
        if (images.flatten(2).std(dim=2) == 0).all(dim=1).any():  # a blank face: this caller's crop is broken
            raise RuntimeError('a blank face')
        return runner(images)

    counted.model = counting
    inputs = [crops_of(counted, 1, colour) for colour in range(4)]
    blank = [crops_of(counted, 1, 0)[0]]
    blank[0].image = Image.new('RGB', blank[0].image.size)
    with BatchingClassifier(counted, max_batch=5, max_wait_ms=1000) as batching:  # waits for all 5
        results: dict = {}

        def call(index: int, crops: list) -> None:
            try:
                results[index] = batching(crops)
            except RuntimeError as e:
                results[index] = e

        threads = [threading.Thread(target=call, args=(i, c)) for i, c in enumerate(inputs + [blank])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert calls[0] == 5 and len(calls) == 1 + 5  # one batch of all; it failed: each caller alone
    assert isinstance(results[4], RuntimeError) and all(len(results[i]) == 1 for i in range(4))
    with pytest.raises(RuntimeError, match='closed'):
        batching(inputs[0])
    with pytest.raises(ConfigError, match='--max-batch must be an integer in'):
        BatchingClassifier(counted, max_batch=0)


def test_batching_waits_only_for_announced_callers_still_coming(model):
    counted = load_classifier(model=model, threads=1)
    calls: List[int] = []
    runner = counted.model
    counted.model = lambda images: calls.append(len(images)) or runner(images)
    faces = [crops_of(counted, 1, colour) for colour in range(2)]
    with BatchingClassifier(counted, max_batch=8, max_wait_ms=1000) as batching:
        start = time.monotonic()
        with batching.caller():
            batching(faces[0])
        assert time.monotonic() - start < 0.5, 'a lone announced request waited for company that does not come'
        answers: dict = {}
        both_announced = threading.Barrier(2)

        def request(index: int, delay: float, hands_faces: bool) -> None:
            with batching.caller():
                both_announced.wait(10)
                time.sleep(delay)  # decoding and detecting
                if hands_faces:
                    answers[index] = batching(faces[index])

        for second_hands_faces in (True, False):
            calls.clear()
            threads = [threading.Thread(target=request, args=(0, 0., True)),
                       threading.Thread(target=request, args=(1, 0.1, second_hands_faces))]
            start = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            # both faces in one pass; a request that found no face lets the other go when it leaves, not after 1 s
            assert calls == ([2] if second_hands_faces else [1]) and time.monotonic() - start < 0.8, calls
    assert len(answers[0]) == len(answers[1]) == 1


def test_video_clip_gives_tracks_and_rows_within_the_length_limit(classifier, temp_root):
    pytest.importorskip('av', reason='the video extra (PyAV) is not installed')
    from test_video import fixed_face, plain_frames, write_video
    clip = write_video(temp_root.parent / 'clip.mp4', plain_frames(10)).read_bytes()  # 1 s at 10 frames/s
    limits = ServeLimits(max_video_seconds=2)
    with TestClient(create_app(classifier, detector=fixed_face, limits=limits, temp_dir=temp_root)) as client:
        answer = client.post('/v1/predict/video', files={'file': ('../my clip.mp4', clip, 'video/mp4')},
                             data={'fps': '5'})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body['video']['file'] == '../my clip.mp4' and body['video']['frames_sampled'] == 5
        assert [(t['track'], t['frames'], t['start']) for t in body['tracks']] == [(0, 5, 0.)]
        assert body['tracks'][0]['expression'] in body['labels']
        assert [(r['frame'], r['track'], r['box']) for r in body['rows']] == [
            (frame, 0, [40, 20, 107, 87]) for frame in (0, 2, 4, 6, 8)]
        long = client.post('/v1/predict/video', files={'file': ('long.mp4', write_video(
            temp_root.parent / 'long.mp4', plain_frames(30)).read_bytes(), 'video/mp4')})
        assert long.status_code == 413 and "'long.mp4' lasts 3.0 s, longer than this server's 2 s" in \
            long.json()['detail']
    assert list(temp_root.iterdir()) == []


def frame_message(frame_id: int, image: bytes) -> bytes:
    return frame_id.to_bytes(4, 'big') + image


def test_live_answers_each_frame_with_stable_tracks_and_errors_for_bad_messages(client, classifier):
    with client.websocket_connect('/v1/live') as live:
        tracks = []
        for frame_id in (7, 8, 9):
            live.send_bytes(frame_message(frame_id, photo(2, frame_id, 'JPEG')))
            answer = live.receive_json()
            assert (answer['id'], answer['model'], answer['width'], answer['height'], answer['dropped']) == (
                frame_id, classifier.model_name, 270, 140, 0)
            assert answer['server_ms'] > 0 and all(f['expression'] in f['probabilities'] for f in answer['faces'])
            tracks.append([(f['track'], f['box']) for f in answer['faces']])
        assert tracks == [[(0, [10, 10, 122, 122]), (1, [140, 10, 252, 122])]] * 3
        live.send_text('hello')
        assert live.receive_json()['id'] is None
        live.send_bytes(b'\x00\x01')
        assert 'holds no frame' in live.receive_json()['error']
        live.send_bytes(frame_message(12, b'not a jpeg'))
        broken = live.receive_json()
        assert broken['id'] == 12 and 'not an image' in broken['error']
        live.send_bytes(frame_message(13, photo(1, 0, 'JPEG')))
        assert live.receive_json()['id'] == 13  # the connection goes on


def test_live_skips_frames_that_queue_behind_a_slow_one_and_needs_the_key(classifier, temp_root):
    entered, release = threading.Event(), threading.Event()

    def slow_detector(image: Image.Image) -> list:
        entered.set()
        assert release.wait(30)
        return faces_by_width(image)

    app = create_app(classifier, detector=slow_detector, api_key='k', temp_dir=temp_root)
    with TestClient(app) as client:
        with pytest.raises(WebSocketDisconnect):
            with client.websocket_connect('/v1/live') as refused:
                refused.receive_json()
        with client.websocket_connect('/v1/live?key=k') as live:
            live.send_bytes(frame_message(1, photo(1, 1, 'JPEG')))
            assert entered.wait(30)
            for frame_id in range(2, 5):
                live.send_bytes(frame_message(frame_id, photo(1, frame_id, 'JPEG')))
            time.sleep(1)  # frames 2-4 wait behind frame 1
            release.set()
            answers = [live.receive_json() for _ in range(4)]
    assert [(a['id'], a.get('skipped', False), a['dropped']) for a in answers] == [
        (1, False, 0), (2, True, 1), (3, True, 2), (4, False, 2)]
    assert len(answers[3]['faces']) == 1


def test_live_client_that_leaves_while_its_frame_is_answered_ends_the_session_quietly():
    class GoneClient:
        sent = 0

        async def send_json(self, message: dict) -> None:
            self.sent += 1
            raise WebSocketDisconnect(1001)

    client = GoneClient()
    session = LiveSession(client, tracker=None, max_pixels=1, max_bytes=1, model='m')
    session.pending.extend([(1, b'', 0.), (2, b'', 0.)])  # frame 1 is answered as skipped: the client has gone
    session.arrived.set()
    asyncio.run(asyncio.wait_for(session._answer(), 5))  # neither raises (an error log per Stop) nor hangs
    assert session.closed and client.sent == 1


def test_cli_names_the_missing_extra_and_warns_off_loopback(classifier, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'fastapi', None)
    assert main(['serve']) == 2
    assert capsys.readouterr().err.strip() == ('timm-fer serve: error: timm-fer serve needs the serve extra (fastapi '
                                               'missing): pip install "timm-fer[serve]"')
    monkeypatch.undo()
    import uvicorn

    from timm_fer.serve import serve
    runs: list = []
    monkeypatch.setattr(uvicorn, 'run', lambda app, **options: runs.append(options))
    for host in ('127.0.0.1', '::1', 'localhost', '0.0.0.0'):
        serve(host, 8123, classifier, detector=faces_by_width)
    assert [run['host'] for run in runs] == ['127.0.0.1', '::1', 'localhost', '0.0.0.0']
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith('warning: listening on 0.0.0.0: any machine that reaches')


@pytest.mark.parametrize('flags, message', [
    (['--port', '70000'], '--port must be an integer in [0, 65535], got 70000.'),
    (['--max-megapixels', '70'], '--max-megapixels must be a number in (0, 67.1089], got 70.0.'),
    (['--max-in-flight', '0'], '--max-in-flight must be an integer in [1, 1024], got 0.'),
    (['--max-wait-ms', '-1'], '--max-wait-ms must be a number in [0, 1000], got -1.0.'),
])
def test_cli_checks_every_option_before_loading(flags, message, capsys, monkeypatch):
    import timm_fer.inference.classifier as classifier_module
    monkeypatch.setattr(classifier_module, 'load_model', lambda *args, **kwargs: pytest.fail('the model loaded'))
    assert main(['serve', *flags]) == 2
    assert capsys.readouterr().err.strip() == f'timm-fer serve: error: {message}'


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_the_command_serves_on_loopback_until_stopped(tmp_path):
    import httpx
    port = free_port()
    command = [sys.executable, '-m', 'timm_fer', 'serve', '--port', str(port), '--aligned', '--backend', 'torch',
               '--threads', '1', '--log-level', 'warning']
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, HF_HUB_OFFLINE='1'), start_new_session=True)
    try:
        deadline, health = time.monotonic() + 90, None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = httpx.get(f'http://127.0.0.1:{port}/healthz', timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert health is not None and health.json() == {'status': 'ok'}, process.stderr.read() \
            if process.poll() is not None else 'no answer in 90 s'
        face = io.BytesIO()
        draw_face(112).save(face, format='PNG')
        answer = httpx.post(f'http://127.0.0.1:{port}/v1/predict', files={'file': ('face.png', face.getvalue())},
                            timeout=60).json()
        assert answer['model'] == 'transfer_fer_compact.ferplus' and len(answer['images'][0]['faces']) == 1
        models = httpx.get(f'http://127.0.0.1:{port}/v1/models', timeout=10).json()  # both shipped tags by default
        assert [m['name'] for m in models['models']] == list(SERVED_MODELS) and models['default'] == SERVED_MODELS[0]
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, process.stderr.read()
