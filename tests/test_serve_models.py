"""``timm-fer serve`` with several models: each request chooses one by name (the form field or query parameter
``model``), the first is the default, and every answer names the model that gave it.

The two shipped tags are served as the command serves them, with the real face detector; their answers are compared
with ``timm_fer.predict`` of the same tag.
"""
import copy
import io
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip('fastapi', reason='the serve extra (FastAPI) is not installed')
from fastapi.testclient import TestClient  # noqa: E402
from starlette.testclient import WebSocketDenialResponse  # noqa: E402

import timm  # noqa: E402
import timm_fer  # noqa: E402
from timm_fer.cli import COMMANDS, build_parser, main  # noqa: E402
from timm_fer.cli.serve import served_models  # noqa: E402
from timm_fer.constants import DEFAULT_MODEL, INTENDED_MODEL, SERVED_MODELS  # noqa: E402
from timm_fer.errors import ConfigError  # noqa: E402
from timm_fer.inference import SAMPLE_IMAGE  # noqa: E402
from timm_fer.inference.classifier import load_classifier  # noqa: E402
from timm_fer.serve import BatchingClassifier, create_app, load_classifiers  # noqa: E402

pytestmark = pytest.mark.usefixtures('offline_hub')

TOLERANCE = 1e-4
"""Most difference between a probability the server gives and the one ``timm_fer.predict`` gives for that model."""


@pytest.fixture(scope='module')
def shipped():
    """Both shipped tags, loaded as ``timm-fer serve`` loads them with no --model (the default first)."""
    return load_classifiers(models=SERVED_MODELS)


@pytest.fixture(scope='module')
def expected(detector):
    """Each shipped tag's probabilities for the sample portrait's face, from ``timm_fer.predict``."""
    return {tag: timm_fer.predict(SAMPLE_IMAGE, model=tag, detector=detector).faces[0].probabilities
            for tag in SERVED_MODELS}


@pytest.fixture()
def client(shipped, detector):
    with TestClient(create_app(shipped, detector=detector)) as test_client:
        yield test_client


def post_portrait(client: TestClient, path: str = '/v1/predict', **fields: str) -> 'httpx.Response':  # noqa: F821
    return client.post(path, files={'file': ('portrait.png', SAMPLE_IMAGE.read_bytes(), 'image/png')}, data=fields)


def assert_close(probabilities: dict, expected: dict) -> None:
    assert list(probabilities) == list(expected)
    assert probabilities == pytest.approx(expected, abs=TOLERANCE)


def test_a_photo_gets_the_answer_of_the_model_it_names_and_of_the_default_without_one(client, expected):
    gaps = [abs(expected[DEFAULT_MODEL][label] - expected[INTENDED_MODEL][label]) for label in expected[DEFAULT_MODEL]]
    assert max(gaps) > 0.05, 'the two shipped tags answer alike: the test could not tell them apart'
    for fields, tag in (({}, DEFAULT_MODEL), ({'model': DEFAULT_MODEL}, DEFAULT_MODEL),
                        ({'model': INTENDED_MODEL}, INTENDED_MODEL)):
        answer = post_portrait(client, top_k='2', **fields)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body['model'] == tag, fields
        face, = body['images'][0]['faces']
        assert_close(face['probabilities'], expected[tag])


def test_models_lists_every_loaded_model_and_the_default(client, shipped):
    listed = client.get('/v1/models').json()
    assert listed['default'] == DEFAULT_MODEL
    assert [model['name'] for model in listed['models']] == list(SERVED_MODELS)
    for model in listed['models']:
        loaded = shipped[model['name']]
        assert model == {'name': loaded.model_name, 'labels': loaded.labels, 'input_size': [3, 48, 48],
                         'weights': loaded.weights, 'backend': loaded.backend,
                         'description': timm.models.get_pretrained_cfg(model['name']).description}
    readings = {model['name']: model['description'].split('. ')[0] for model in listed['models']}
    assert readings == {DEFAULT_MODEL: 'Reads the perceived expression: what ten annotators saw on each face (the '
                                       'FERPlus votes)',
                        INTENDED_MODEL: 'Reads the intended expression: what each face was collected and labelled as '
                                        "(FER2013's original labels)"}


def test_an_unknown_model_is_a_422_naming_the_loaded_ones(client):
    detail = ("model 'transfer_fer_compact.rafdb' is not loaded on this server, which serves "
              f'{DEFAULT_MODEL}, {INTENDED_MODEL} (default {DEFAULT_MODEL}); send one of these, or leave model out '
              'for the default.')
    for path in ('/v1/predict', '/v1/predict/video'):
        refused = post_portrait(client, path, model='transfer_fer_compact.rafdb')
        assert (refused.status_code, refused.json()) == (422, {'detail': detail}), path
    with pytest.raises(WebSocketDenialResponse) as refused:
        with client.websocket_connect('/v1/live?model=transfer_fer_compact.rafdb'):
            pass
    assert (refused.value.status_code, refused.value.json()) == (422, {'detail': detail})
    long = post_portrait(client, model='x' * 5000).json()['detail']
    assert len(long) < 400 and '\n' not in long


def test_live_classifies_with_the_model_of_its_query(client, detector, tmp_path):
    frame = io.BytesIO()
    Image.open(SAMPLE_IMAGE).convert('RGB').save(frame, format='JPEG', quality=90)
    jpeg = tmp_path / 'frame.jpg'
    jpeg.write_bytes(frame.getvalue())
    for query, tag in (('', DEFAULT_MODEL), (f'?model={INTENDED_MODEL}', INTENDED_MODEL)):
        with client.websocket_connect(f'/v1/live{query}') as live:
            live.send_bytes((1).to_bytes(4, 'big') + frame.getvalue())
            answer = live.receive_json()
        assert answer['model'] == tag, answer
        face, = answer['faces']
        assert_close(face['probabilities'], timm_fer.predict(jpeg, model=tag, detector=detector).faces[0].probabilities)


def test_a_clip_gets_the_answer_of_the_model_it_names(shipped, tmp_path):
    pytest.importorskip('av', reason='the video extra (PyAV) is not installed')
    from test_video import fixed_face, plain_frames, write_video

    clip = write_video(tmp_path / 'clip.mp4', plain_frames(10))
    with TestClient(create_app(shipped, detector=fixed_face)) as client:
        for fields, tag in (({}, DEFAULT_MODEL), ({'model': INTENDED_MODEL}, INTENDED_MODEL)):
            answer = client.post('/v1/predict/video', files={'file': ('clip.mp4', clip.read_bytes(), 'video/mp4')},
                                 data={'fps': '5', **fields})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            alone = timm_fer.predict_video(clip, model=tag, detector=fixed_face, fps=5, progress=False)
            assert body['model'] == tag and len(body['rows']) == len(alone.faces) == 5
            for row, face in zip(body['rows'], alone.faces):
                assert_close(row['probabilities'], face.probabilities)


def test_create_app_takes_one_classifier_a_sequence_or_names_and_closes_the_batching_it_made(model):
    first, second = (load_classifier(model=model, threads=1) for _ in range(2))
    with TestClient(create_app(first)) as client:
        listed = client.get('/v1/models').json()
        assert listed['default'] == first.model_name == 'TransFER'
        assert listed['models'][0]['description'] == model.pretrained_cfg['description'] != ''
    bare = copy.deepcopy(model)
    bare.pretrained_cfg = {k: v for k, v in model.pretrained_cfg.items() if k != 'description'}
    assert load_classifier(model=bare, threads=1).description == ''  # a cfg without one
    with pytest.raises(ConfigError, match='^two classifiers are named TransFER: pass a mapping of distinct names'):
        create_app([first, second])
    with pytest.raises(TypeError, match='^classifier is a FaceClassifier'):
        create_app(['transfer_fer_compact.ferplus'])
    with pytest.raises(ConfigError, match='^no classifier to serve'):
        create_app({})
    kept = BatchingClassifier(second)
    app = create_app({'mine': first, 'yours': kept})
    with TestClient(app) as client:
        listed = client.get('/v1/models').json()
        assert ([m['name'] for m in listed['models']], listed['default']) == (['mine', 'yours'], 'mine')
        made = app.state.service.classifiers['mine']
        assert isinstance(made, BatchingClassifier) and app.state.service.classifiers['yours'] is kept
    crops = first.crop_faces(Path('face.png'), Image.open(SAMPLE_IMAGE).convert('RGB').resize((112, 112)), None, 0)[0]
    with pytest.raises(RuntimeError, match='closed'):
        made(crops)  # the application stopped the batching it made
    assert len(kept(crops)) == 1  # and left the one it was given running
    kept.close()


def test_load_classifiers_refuses_a_model_twice_and_several_with_one_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match=f'^--model {DEFAULT_MODEL} is given twice: name each model once.$'):
        load_classifiers(models=[DEFAULT_MODEL, INTENDED_MODEL, DEFAULT_MODEL])
    with pytest.raises(ConfigError, match='^--checkpoint holds the weights of one model, and 2 --model are given'):
        load_classifiers(models=SERVED_MODELS, checkpoint=tmp_path / 'best.pth')
    with pytest.raises(ConfigError, match=f'^--model transfer_fer_compact and --model {DEFAULT_MODEL} load the same '
                                          f'model, {DEFAULT_MODEL}: give it once.$'):
        load_classifiers(models=['transfer_fer_compact', DEFAULT_MODEL])


@pytest.mark.parametrize('argv, models', [
    ([], SERVED_MODELS),
    (['--model', INTENDED_MODEL], (INTENDED_MODEL,)),
    (['--model', INTENDED_MODEL, '--model', DEFAULT_MODEL], (INTENDED_MODEL, DEFAULT_MODEL)),
    (['--model', INTENDED_MODEL, DEFAULT_MODEL], (INTENDED_MODEL, DEFAULT_MODEL)),
    (['--checkpoint', 'run/best.pth'], ()),
    (['--checkpoint', 'run/best.pth', '--model', 'transfer_fer_ir50'], ('transfer_fer_ir50',)),
])
def test_the_command_serves_the_models_given_else_both_shipped_tags(argv, models):
    args = build_parser(COMMANDS).parse_args(['serve', *argv])
    assert served_models(args) == models


@pytest.mark.parametrize('argv, message', [
    (['--model', DEFAULT_MODEL, INTENDED_MODEL, DEFAULT_MODEL],
     f'--model {DEFAULT_MODEL} is given twice: name each model once.'),
    (['--model', DEFAULT_MODEL, 'transfer_fer_compact.nope'],
     "unknown tag 'nope' for transfer_fer_compact; known tags: ferplus, fer2013."),
    (['--replicas', '2', '--model', INTENDED_MODEL, INTENDED_MODEL],
     f'--model {INTENDED_MODEL} is given twice: name each model once.'),
])
def test_the_command_refuses_a_model_twice_or_unknown_at_start(argv, message, capsys, monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn, 'run', lambda app, **options: pytest.fail('the server started'))
    assert main(['serve', '--aligned', *argv]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f'timm-fer serve: error: {message}'


def test_each_replica_loads_every_model_and_requests_choose(detector):
    from timm_fer.serve.replicas import ReplicaSettings, build_replica_app

    app = build_replica_app(ReplicaSettings(models=(INTENDED_MODEL, DEFAULT_MODEL)))
    with TestClient(app) as client:
        listed = client.get('/v1/models').json()
        assert ([m['name'] for m in listed['models']], listed['default']) == ([INTENDED_MODEL, DEFAULT_MODEL],
                                                                             INTENDED_MODEL)
        assert post_portrait(client).json()['model'] == INTENDED_MODEL
        assert post_portrait(client, model=DEFAULT_MODEL).json()['model'] == DEFAULT_MODEL
