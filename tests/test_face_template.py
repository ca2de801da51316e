"""Face templates: FER2013's measured one, which template each model takes, and how it travels with the weights."""
import importlib
import json

import numpy as np
import pytest
import timm
import torch
from drawn_faces import draw_face
from helpers import TINY
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from source_layouts import make_hub_cache
from torch import nn

from timm_fer.constants import DATASET_FACE_TEMPLATES, HF_HUB_ORG, TAG_FACE_TEMPLATES
from timm_fer.errors import ConfigError
from timm_fer.faces import (
    ARCFACE_TEMPLATE_112,
    DEFAULT_FACE_TEMPLATE,
    FACE_TEMPLATES,
    FER2013_TEMPLATE_48,
    DetectedFace,
    align_face,
    apply_similarity,
    estimate_similarity,
    face_template,
)
from timm_fer.hub import TRAIN_CHECKPOINT_FORMAT, load_model, make_model_card, read_checkpoint, write_hub_folder
from timm_fer.hub.checkpoint import DATA_CONFIG_KEYS
from timm_fer.hub.loading import resolve_face_template, resolve_fer_data_config
from timm_fer.inference.export import export_metadata
from timm_fer.inference.predict import predict

pytestmark = pytest.mark.usefixtures('offline_hub')
CLASSES = ('calm', 'happy', 'angry')


class Tagged(nn.Module):
    """A stand-in model that only has a pretrained cfg."""

    def __init__(self, name: str) -> None:
        super().__init__()
        architecture, _, tag = name.partition('.')
        self.pretrained_cfg = dict(architecture=architecture, tag=tag or None)


@pytest.fixture(scope='module')
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model('transfer_fer_ir50', num_classes=len(CLASSES), img_size=64, **TINY).eval()


def run_checkpoint(model: nn.Module, path, dataset: str = 'folder', **data_config) -> None:
    """A checkpoint laid out as ``timm-fer train`` writes it, whose data config has ``data_config`` added."""
    saved = {**dict(input_size=(3, 64, 64), mean=(0.5,) * 3, std=(0.5,) * 3, interpolation='bilinear'), **data_config}
    config = dict(model='transfer_fer_ir50', model_kwargs=TINY, img_size=64, classes=list(CLASSES), dataset=dataset,
                  data_config=saved)
    torch.save({'format': TRAIN_CHECKPOINT_FORMAT, 'config': config, 'model': model.state_dict()}, path)


def test_fer2013_template_is_a_plausible_face_in_its_48x48_crop():
    np.testing.assert_array_equal(face_template((48, 48), 'fer2013'), FER2013_TEMPLATE_48)
    np.testing.assert_allclose(face_template((96, 48), 'fer2013'), FER2013_TEMPLATE_48 * [1., 2.])
    np.testing.assert_array_equal(face_template((112, 112)), ARCFACE_TEMPLATE_112)  # ArcFace stays the default
    (left_eye, right_eye, nose, left_mouth, right_mouth) = FER2013_TEMPLATE_48
    assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < nose[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    mirrored = FER2013_TEMPLATE_48[[1, 0, 2, 4, 3]] * [-1, 1] + [47, 0]
    np.testing.assert_allclose(FER2013_TEMPLATE_48, mirrored, atol=0.5)  # left-right symmetric within half a pixel
    arcface_48 = face_template((48, 48))
    assert np.linalg.norm(right_eye - left_eye) > 1.1 * np.linalg.norm(arcface_48[1] - arcface_48[0])  # larger face


@pytest.mark.parametrize('name', ['mtcnn', ['fer2013'], None])
def test_unknown_template_names_say_which_exist(name):
    with pytest.raises(ConfigError, match="known: arcface, fer2013"):
        face_template((48, 48), name)


def test_tags_name_their_templates_and_every_name_exists():
    assert resolve_face_template(Tagged('transfer_fer_compact.ferplus')) == 'fer2013'
    for name in ('transfer_fer_ir50.rafdb', 'transfer_fer_ir50.ferplus', 'transfer_fer_ir50.ms1m_in1k',
                 'transfer_fer_ir50_b4.affectnet7', 'vit_fer_ir50', 'ir_50.ms1m', 'transfer_fer_compact'):
        assert resolve_face_template(Tagged(name)) == DEFAULT_FACE_TEMPLATE == 'arcface', name
    assert resolve_face_template(nn.Linear(2, 2)) == 'arcface'  # a model without a pretrained cfg
    assert set(TAG_FACE_TEMPLATES.values()) | set(DATASET_FACE_TEMPLATES.values()) <= set(FACE_TEMPLATES)
    compact = timm.create_model('transfer_fer_compact.ferplus')
    assert resolve_fer_data_config(compact)['face_template'] == 'fer2013'
    assert 'face_template' not in compact.pretrained_cfg  # timm's pretrained cfgs have no such field
    compact.face_template = 'arcface'  # what a checkpoint says wins over the tag
    assert resolve_fer_data_config(compact)['face_template'] == 'arcface'


def similarity(angle: float, scale: float, shift_x: float, shift_y: float) -> np.ndarray:
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[cos, -sin, shift_x], [sin, cos, shift_y]])


@given(name=st.sampled_from(sorted(FACE_TEMPLATES)), size=st.sampled_from([(48, 48), (112, 112), (64, 48)]),
       angle=st.floats(-1., 1.), scale=st.floats(0.5, 6.), shift=st.tuples(st.floats(0, 50), st.floats(0, 50)))
def test_align_face_puts_the_landmarks_on_the_given_template(name, size, angle, scale, shift):
    """Random similarity transforms of a template's points are aligned back onto the template (well within a pixel).

    The photo's pixels hold their own x (or y) index, so the crop shows where each of its pixels came from: a plane,
    whose inverse maps the landmarks into the crop.
    """
    template = face_template(size, name)
    height, width = size
    corners = [[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]]
    rotated = apply_similarity(similarity(angle, scale, 0., 0.), corners)
    matrix = similarity(angle, scale, *(np.array(shift) + 20 - rotated.min(axis=0)))  # crop -> photo, all inside
    landmarks = apply_similarity(matrix, template)
    photo_size = int(np.ceil(apply_similarity(matrix, corners).max())) + 20
    xs, ys = np.meshgrid(np.arange(photo_size, dtype=np.float32), np.arange(photo_size, dtype=np.float32))
    came_from = np.stack([np.asarray(align_face(Image.fromarray(v + 1000, 'F'), landmarks, size, template=template))
                          for v in (xs, ys)], axis=-1) - 1000
    assert came_from.shape == (height, width, 2)
    grid = np.stack(np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)), axis=-1)
    inner = grid[2:-2, 2:-2].reshape(-1, 2)  # away from the crop's edge, where a warp mixes in the outside
    fitted = estimate_similarity(came_from[2:-2, 2:-2].reshape(-1, 2), inner)  # photo -> crop, from the pixels
    assert np.abs(apply_similarity(fitted, landmarks) - template).max() < 0.01


def test_align_face_without_a_template_uses_arcface_as_before():
    image = draw_face(240)
    landmarks = ARCFACE_TEMPLATE_112 * 1.8 + [20, 15]
    default = np.asarray(align_face(image, landmarks, (48, 48)))
    np.testing.assert_array_equal(default, np.asarray(align_face(image, landmarks, (48, 48),
                                                                 template=face_template((48, 48)))))
    assert not np.array_equal(default, np.asarray(align_face(image, landmarks, (48, 48),
                                                             template=face_template((48, 48), 'fer2013'))))


@pytest.mark.parametrize('dataset, saved, expected', [
    ('folder', dict(face_template='fer2013'), 'fer2013'),  # what the run saved comes back
    ('folder', {}, 'arcface'),  # nothing saved: the model's (its tag's, else ArcFace's)
    ('ferplus', {}, 'fer2013'),  # runs from before templates: the dataset fixes the framing
    ('ferplus', dict(face_template='arcface'), 'fer2013'),
    ('rafdb', dict(face_template='fer2013'), 'arcface'),
])
def test_run_checkpoint_carries_its_template_beside_the_timm_data_config(tiny, tmp_path, dataset, saved, expected):
    run_checkpoint(tiny, tmp_path / 'best.pth', dataset, **saved)
    checkpoint = read_checkpoint(tmp_path / 'best.pth')
    assert checkpoint.face_template == (expected if saved or dataset != 'folder' else None)
    assert set(checkpoint.data_config) <= set(DATA_CONFIG_KEYS)  # what is handed to timm has no template
    model, _ = load_model(checkpoint=tmp_path / 'best.pth')
    assert resolve_fer_data_config(model)['face_template'] == expected and 'face_template' not in model.pretrained_cfg


def test_the_data_config_a_run_saves_round_trips(tiny, tmp_path):
    """``timm-fer train`` saves ``resolve_fer_data_config(model)``; loading the checkpoint gives it back."""
    tiny.face_template = 'fer2013'
    try:
        data_config = resolve_fer_data_config(tiny)
    finally:
        del tiny.face_template
    run_checkpoint(tiny, tmp_path / 'best.pth', **data_config)
    model, _ = load_model(checkpoint=tmp_path / 'best.pth')
    assert resolve_fer_data_config(model) == data_config


def test_hub_folder_names_the_template_where_timm_ignores_it(tmp_path, offline_hub):
    torch.manual_seed(0)
    model = timm.create_model('transfer_fer_ir50.ferplus', num_classes=8, **TINY).eval()
    model.face_template = 'fer2013'
    folder = write_hub_folder(model, tmp_path / 'hub', make_model_card(model, command='test'))
    config = json.loads((folder / 'config.json').read_text())
    assert config['face_template'] == 'fer2013' and 'face_template' not in config['pretrained_cfg']
    assert "'fer2013' template" in (folder / 'README.md').read_text()
    assert read_checkpoint(folder).face_template == 'fer2013'
    loaded, _ = load_model(checkpoint=folder)
    assert resolve_fer_data_config(loaded)['face_template'] == 'fer2013'
    make_hub_cache(offline_hub, f'{HF_HUB_ORG}/mine', folder)
    from_timm = timm.create_model(f'hf-hub:{HF_HUB_ORG}/mine', pretrained=True, **TINY)  # timm reads it as before
    assert from_timm.pretrained_cfg['tag'] == 'ferplus' and 'face_template' not in from_timm.pretrained_cfg

    default = timm.create_model('transfer_fer_ir50.rafdb', **TINY).eval()
    folder = write_hub_folder(default, tmp_path / 'rafdb', make_model_card(default, command='test'))
    assert json.loads((folder / 'config.json').read_text())['face_template'] == 'arcface'
    assert read_checkpoint(folder).face_template == 'arcface'


def test_export_metadata_has_the_template_and_its_points_at_the_input_size():
    metadata = export_metadata(timm.create_model('transfer_fer_compact.ferplus'))
    assert metadata['face_template'] == 'fer2013'
    np.testing.assert_allclose(metadata['face_template_points'], FER2013_TEMPLATE_48, atol=1e-4)
    assert "template 'fer2013'" in metadata['input']
    metadata = export_metadata(timm.create_model('transfer_fer_ir50.rafdb', **TINY))
    assert metadata['face_template'] == 'arcface'
    np.testing.assert_allclose(metadata['face_template_points'], ARCFACE_TEMPLATE_112, atol=1e-4)


@pytest.mark.parametrize('source, expected', [
    ('model', 'arcface'),  # a model that says nothing: ArcFace's, as before
    ('fer2013 model', 'fer2013'),
    ('ferplus run', 'fer2013'),  # a run checkpoint: its dataset's
])
def test_predict_aligns_faces_to_the_model_template(tiny, tmp_path, monkeypatch, source, expected):
    draw_face(240).save(tmp_path / 'face.png')
    face = DetectedFace(box=(40, 20, 200, 220), landmarks=ARCFACE_TEMPLATE_112 * 1.5 + [30, 20], score=0.99)
    seen = []

    def spy(image, landmarks, size, resample, template=None):
        seen.append(template)
        return align_face(image, landmarks, size, resample, template)

    monkeypatch.setattr(importlib.import_module('timm_fer.inference.classifier'), 'align_face', spy)
    if source == 'ferplus run':
        run_checkpoint(tiny, tmp_path / 'best.pth', 'ferplus')
        source_args, size = dict(checkpoint=tmp_path / 'best.pth', device='cpu'), (64, 64)
    else:
        model = timm.create_model('transfer_fer_ir50', **TINY).eval()
        if source == 'fer2013 model':
            model.face_template = 'fer2013'
        source_args, size = dict(model=model), (112, 112)
    report = predict([tmp_path / 'face.png'], detector=lambda image: [face], save_crops=tmp_path / 'c', **source_args)
    assert len(report.faces) == 1 and len(seen) == 1, report.skipped
    np.testing.assert_array_equal(seen[0], face_template(size, expected))
    aligned_by_hand = align_face(draw_face(240), face.landmarks, size, template=face_template(size, expected))
    np.testing.assert_array_equal(np.asarray(Image.open(report.faces[0].crop)), np.asarray(aligned_by_hand))
