"""``timm-fer serve``'s queue: uploads over the in-flight limit wait their turn, bounded in number and in time."""
import asyncio
import io
import threading
import time
from typing import Callable, List

import pytest
from drawn_faces import draw_face, stub_face
from PIL import Image

pytest.importorskip('fastapi', reason='the serve extra is not installed')
from fastapi.testclient import TestClient  # noqa: E402

from timm_fer.cli import main  # noqa: E402
from timm_fer.inference import SAMPLE_IMAGE, load_classifier  # noqa: E402
from timm_fer.serve import ServeLimits, create_app  # noqa: E402
from timm_fer.serve.app import RequestGate  # noqa: E402

pytestmark = pytest.mark.usefixtures('offline_hub')


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return buffer.getvalue()


def post(client: TestClient, data: bytes, name: str = 'photo.png') -> 'httpx.Response':  # noqa: F821
    return client.post('/v1/predict', files=[('file', (name, data, 'image/png'))])


def gate_of(app) -> RequestGate:
    """The application's :class:`RequestGate` (its middleware stack is built on the first request)."""
    layer = app.middleware_stack
    while not isinstance(layer, RequestGate):
        layer = layer.app
    return layer


def wait_until(condition: Callable[[], bool], seconds: float = 30.) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, 'the condition never held'
        time.sleep(0.01)


def in_threads(send: Callable[[int], None], count: int) -> List[threading.Thread]:
    threads = [threading.Thread(target=send, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_64_concurrent_clients_of_the_portrait_and_a_blank_image_all_get_their_own_answer(detector, tmp_path):
    portrait, blank = SAMPLE_IMAGE.read_bytes(), png(Image.new('RGB', (224, 224), 'white'))
    classifier = load_classifier()  # the shipped model, as `timm-fer serve` loads it
    answers: dict = {}
    with TestClient(create_app(classifier, detector=detector, temp_dir=tmp_path)) as client:  # the default limits
        alone = post(client, portrait).json()['images'][0]

        def send(i: int) -> None:
            answers[i] = post(client, blank if i % 3 == 2 else portrait, name=f'{i}.png')

        for thread in in_threads(send, 64):
            thread.join(120)
    assert len(answers) == 64
    assert [i for i, answer in answers.items() if answer.status_code != 200] == []
    for i, answer in answers.items():
        image = answer.json()['images'][0]
        assert image['file'] == f'{i}.png'
        if i % 3 == 2:
            assert image['faces'] == [] and image['skipped']
        else:
            assert len(image['faces']) == 1 and image['faces'][0]['box'] == alone['faces'][0]['box']
            assert image['faces'][0]['expression'] == 'happiness'
            assert image['faces'][0]['probabilities'] == pytest.approx(alone['faces'][0]['probabilities'], abs=1e-4)


class BlockingDetector:
    """A stand-in detector that holds each call until released, counting the calls inside it at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0
        self.calls = 0

    def __call__(self, image: Image.Image) -> list:
        with self.lock:
            self.inside += 1
            self.calls += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            assert self.release.wait(60)
            return [stub_face(10, 10, 1.)]
        finally:
            with self.lock:
                self.inside -= 1


@pytest.fixture(scope='module')
def classifier(model):
    return load_classifier(model=model, threads=1)


def test_a_queue_past_its_size_answers_429_with_retry_after(classifier, tmp_path):
    detector = BlockingDetector()
    app = create_app(classifier, detector=detector, temp_dir=tmp_path,
                     limits=ServeLimits(max_in_flight=1, queue_size=1, retry_after=7))
    face = png(draw_face(140))
    answers: dict = {}
    with TestClient(app) as client:
        assert client.get('/healthz').status_code == 200
        gate = gate_of(app)

        def send(i: int) -> None:
            answers[i] = post(client, face)

        threads = in_threads(send, 1)
        wait_until(lambda: detector.inside == 1)
        threads.append(threading.Thread(target=send, args=(1,)))
        threads[1].start()
        wait_until(lambda: len(gate.waiting) == 1)
        refused = post(client, face)
        assert refused.status_code == 429 and refused.headers['Retry-After'] == '7'
        assert refused.json()['detail'] == ('the server is working on 1 requests and 1 more wait, its limits; retry '
                                            'after 7 s.')
        detector.release.set()
        for thread in threads:
            thread.join(60)
        assert [answers[i].status_code for i in range(2)] == [200, 200]
        assert gate.in_flight == 0 and not gate.waiting
    assert detector.calls == 2 and detector.most_inside == 1


def test_a_request_waits_at_most_the_queue_timeout(classifier, tmp_path):
    detector = BlockingDetector()
    app = create_app(classifier, detector=detector, temp_dir=tmp_path,
                     limits=ServeLimits(max_in_flight=1, queue_size=4, queue_timeout_s=0.3, retry_after=2))
    face = png(draw_face(140))
    with TestClient(app) as client:
        first: list = []
        threads = in_threads(lambda i: first.append(post(client, face)), 1)
        wait_until(lambda: detector.inside == 1)
        start = time.monotonic()
        late = post(client, face)
        assert time.monotonic() - start >= 0.3
        assert late.status_code == 429 and late.headers['Retry-After'] == '2'
        assert late.json()['detail'] == ("the request waited 0.3 s in the queue for one of the server's 1 places, its "
                                         "limit; retry after 2 s.")
        detector.release.set()
        threads[0].join(60)
        assert first[0].status_code == 200
        gate = gate_of(app)
        assert gate.in_flight == 0 and not gate.waiting
        assert post(client, face).status_code == 200


def test_queued_requests_never_exceed_the_in_flight_limit_and_all_get_answers(classifier, tmp_path):
    detector = BlockingDetector()
    detector.release.set()
    app = create_app(classifier, detector=detector, temp_dir=tmp_path, limits=ServeLimits(max_in_flight=2))
    faces = [png(draw_face(140 + 4 * i)) for i in range(12)]
    answers: dict = {}
    with TestClient(app) as client:
        def send(i: int) -> None:
            answers[i] = post(client, faces[i], name=f'{i}.png')

        for thread in in_threads(send, len(faces)):
            thread.join(60)
    assert sorted(answers) == list(range(len(faces)))
    assert all(answer.status_code == 200 and answer.json()['images'][0]['file'] == f'{i}.png'
               for i, answer in answers.items())
    assert detector.calls == len(faces) and detector.most_inside <= 2


def test_a_request_cancelled_in_the_queue_leaves_it_and_the_next_one_gets_the_place():
    async def scenario() -> None:
        finish = asyncio.Event()
        started: List[int] = []

        async def app(scope, receive, send) -> None:
            started.append(scope['id'])
            await finish.wait()

        gate = RequestGate(app, ServeLimits(max_in_flight=1, queue_size=8), api_key=None)
        scope = {'type': 'http', 'path': '/v1/predict', 'method': 'POST',
                 'headers': [(b'content-type', b'multipart/form-data; boundary=x')]}

        async def noop_send(message) -> None:
            pass

        tasks = [asyncio.create_task(gate(dict(scope, id=i), None, noop_send)) for i in range(3)]
        while len(gate.waiting) < 2:
            await asyncio.sleep(0)
        tasks[1].cancel()  # a client that leaves while it waits
        await asyncio.gather(tasks[1], return_exceptions=True)
        assert len(gate.waiting) == 1 and started == [0]
        finish.set()
        await asyncio.wait_for(asyncio.gather(tasks[0], tasks[2]), 5)
        assert started == [0, 2] and gate.in_flight == 0 and not gate.waiting

    asyncio.run(scenario())


@pytest.mark.parametrize('flags, message', [
    (['--queue-size', '-1'], '--queue-size must be an integer in [0, 65536], got -1.'),
    (['--queue-timeout-s', 'nan'], '--queue-timeout-s must be a number in [0, 3600], got nan.'),
])
def test_cli_checks_the_queue_options_before_loading(flags, message, capsys, monkeypatch):
    import timm_fer.inference.classifier as classifier_module
    monkeypatch.setattr(classifier_module, 'load_model', lambda *args, **kwargs: pytest.fail('the model loaded'))
    assert main(['serve', *flags]) == 2
    assert capsys.readouterr().err.strip() == f'timm-fer serve: error: {message}'
