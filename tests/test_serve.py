"""``timm-fer serve``: the REST API, its limits and safety defaults, micro-batching, and the live WebSocket.

The application runs in-process through FastAPI's TestClient (no socket), with a tiny random TransFER and stand-in
detectors; one slow test starts the real command on a free loopback port.
"""
import base64
import io
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
from fastapi.testclient import TestClient  # noqa: E402

from timm_fer.errors import ConfigError  # noqa: E402
from timm_fer.inference.classifier import load_classifier  # noqa: E402
from timm_fer.serve import API_KEY_HEADER, BatchingClassifier, ServeLimits, create_app  # noqa: E402

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
        'weights': classifier.weights, 'backend': 'torch'}]}
    assert '/v1/predict' in client.get('/openapi.json').json()['paths']
    assert client.get('/docs').status_code == 200
    page = client.get('/')
    assert page.status_code == 200 and '<html' in page.text.lower() or page.status_code == 404


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


def test_upload_pixel_and_file_count_limits(classifier, temp_root):
    limits = ServeLimits(max_upload_mb=0.05, max_pixels=200 * 140, max_files=2)
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

    app = create_app(classifier, detector=slow_detector, limits=ServeLimits(max_in_flight=1, retry_after=3),
                     temp_dir=temp_root)
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
    with BatchingClassifier(counted, max_batch=32, max_wait_ms=300) as batching:
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
