"""The one loading API: any checkpoint (file, run checkpoint, Hub folder) read once, and a model built from it."""
import json
import math

import pytest
import safetensors.torch
import timm
import torch
from helpers import TINY
from hypothesis import given
from hypothesis import strategies as st

from timm_fer.cli import main
from timm_fer.constants import FERPLUS_LABELS, RAFDB_LABELS
from timm_fer.errors import CheckpointMismatchError, ConfigError, PretrainedWeightsError
from timm_fer.hub import (
    DEFAULT_MODEL,
    TRAIN_CHECKPOINT_FORMAT,
    load_model,
    make_model_card,
    read_checkpoint,
    write_hub_folder,
)

CLASSES = ('calm', 'happy', 'angry')

pytestmark = pytest.mark.usefixtures('offline_hub')


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return timm.create_model('transfer_fer_ir50', num_classes=len(CLASSES), img_size=64, **TINY).eval()


def run_checkpoint(model: torch.nn.Module, path, **config) -> None:
    """A checkpoint laid out as ``timm-fer train`` writes it (DDP prefixes included), with the run's config."""
    config = dict(dict(model='transfer_fer_ir50', model_kwargs=TINY, img_size=64, classes=list(CLASSES),
                       dataset='folder', data_config=dict(input_size=(3, 64, 64), mean=(0.5,) * 3, std=(0.5,) * 3,
                                                          interpolation='bicubic', crop_pct=1.0)), **config)
    torch.save({'format': TRAIN_CHECKPOINT_FORMAT, 'config': config, 'epoch': 1,
                'model': {f'module.{k}': v for k, v in model.state_dict().items()}}, path)


def same_outputs(a: torch.nn.Module, b: torch.nn.Module, size: int = 64) -> bool:
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        return torch.allclose(a(x), b(x), atol=1e-6)


def test_run_checkpoint_names_its_model_labels_and_preprocessing(tiny, tmp_path):
    run_checkpoint(tiny, tmp_path / 'best.pth')
    checkpoint = read_checkpoint(tmp_path / 'best.pth')
    assert checkpoint.model_name == 'transfer_fer_ir50' and checkpoint.labels == CLASSES
    assert checkpoint.model_kwargs == dict(TINY, img_size=64) and checkpoint.training_state['epoch'] == 1
    assert not any(k.startswith('module.') for k in checkpoint.state_dict)
    model, source = load_model(checkpoint=tmp_path / 'best.pth')
    assert source == f'checkpoint {tmp_path / "best.pth"}' and not model.training
    assert model.pretrained_cfg['label_names'] == list(CLASSES) and model.pretrained_cfg.get('tag') is None
    assert timm.data.resolve_data_config({}, model=model)['input_size'] == (3, 64, 64)
    assert timm.data.resolve_data_config({}, model=model)['interpolation'] == 'bicubic'
    assert 'state_dict' not in model.pretrained_cfg
    assert same_outputs(model, tiny)


def test_hub_folder_is_read_as_the_model_it_names(tiny, tmp_path):
    model = timm.create_model('transfer_fer_ir50.ferplus', num_classes=8, **TINY).eval()
    write_hub_folder(model, tmp_path / 'hub', make_model_card(model, command='test'))
    checkpoint = read_checkpoint(tmp_path / 'hub')
    assert checkpoint.model_name == 'transfer_fer_ir50.ferplus' and checkpoint.labels == FERPLUS_LABELS
    loaded, _ = load_model(checkpoint=tmp_path / 'hub')
    assert list(loaded.pretrained_cfg['label_names']) == list(FERPLUS_LABELS) and same_outputs(loaded, model, 112)


def test_plain_file_without_a_model_name_says_which_model_it_tried(tiny, tmp_path):
    rafdb = timm.create_model('transfer_fer_ir50', **TINY)
    safetensors.torch.save_file(rafdb.state_dict(), tmp_path / 'rafdb.safetensors')
    with pytest.raises(CheckpointMismatchError, match=f'does not fit {DEFAULT_MODEL} \\(the default; the file does '
                                                      'not say which model it holds\\).*Pass --model'):
        load_model(checkpoint=tmp_path / 'rafdb.safetensors')
    loaded, _ = load_model('transfer_fer_ir50.rafdb', tmp_path / 'rafdb.safetensors', model_kwargs=TINY)
    assert list(loaded.pretrained_cfg['label_names']) == list(RAFDB_LABELS) and same_outputs(loaded, rafdb.eval(), 112)


def test_a_new_head_does_not_keep_the_tag_label_names(tiny, tmp_path):
    compact = timm.create_model('transfer_fer_compact', pretrained=True, num_classes=7)
    assert compact.pretrained_cfg['num_classes'] == 7 and compact.pretrained_cfg['label_names'] is None
    named = timm.create_model('transfer_fer_compact', pretrained=True, label_names=RAFDB_LABELS)
    assert named.num_classes == named.pretrained_cfg['num_classes'] == 7
    assert named.pretrained_cfg['label_names'] == RAFDB_LABELS
    shipped = timm.create_model('transfer_fer_compact', pretrained=True).pretrained_cfg
    assert shipped['num_classes'] == 8 and shipped['label_names'] == FERPLUS_LABELS
    with pytest.raises(ConfigError, match='3 label_names for a head of 7 classes'):
        timm.create_model('transfer_fer_ir50', num_classes=7, label_names=CLASSES, **TINY)
    safetensors.torch.save_file(tiny.state_dict(), tmp_path / 'three.safetensors')  # weights that name no classes
    loaded, _ = load_model('transfer_fer_ir50.rafdb', tmp_path / 'three.safetensors',
                           model_kwargs=dict(TINY, img_size=64))
    assert loaded.num_classes == 3 and loaded.pretrained_cfg['label_names'] == ('class_0', 'class_1', 'class_2')


def test_a_classifier_for_other_classes_is_refused_not_reset(tiny, tmp_path):
    run_checkpoint(tiny, tmp_path / 'best.pth')
    with pytest.raises(CheckpointMismatchError, match='classifier for 3 classes, but 7 are needed'):
        load_model(checkpoint=tmp_path / 'best.pth', num_classes=7)


@given(bad=st.sampled_from([math.nan, math.inf, -math.inf]), index=st.integers(0, 31))
def test_non_finite_weights_are_refused_at_load(tmp_path_factory, bad, index):
    folder = tmp_path_factory.mktemp('nan')
    state_dict = timm.create_model('transfer_fer_ir50', **TINY).state_dict()
    state_dict['head.weight'].view(-1)[index] = bad
    torch.save(state_dict, folder / 'diverged.pth')
    with pytest.raises(PretrainedWeightsError, match='NaN or infinite weights in head.weight'):
        read_checkpoint(folder / 'diverged.pth')


def test_integer_weights_are_refused_at_load(tmp_path):
    state_dict = timm.create_model('transfer_fer_ir50', **TINY).state_dict()
    state_dict = {k: v.round().long() if k == 'head.weight' else v for k, v in state_dict.items()}
    safetensors.torch.save_file(state_dict, tmp_path / 'int.safetensors')
    with pytest.raises(PretrainedWeightsError, match='head.weight as torch.int64, not floating point'):
        load_model('transfer_fer_ir50', tmp_path / 'int.safetensors', model_kwargs=TINY)


def test_a_folder_that_is_not_a_hub_folder_says_what_it_needs(tmp_path):
    with pytest.raises(PretrainedWeightsError, match='needs model.safetensors and config.json'):
        read_checkpoint(tmp_path)
    (tmp_path / 'model.safetensors').write_bytes(b'')
    (tmp_path / 'config.json').write_text(json.dumps({'no': 'architecture'}))
    with pytest.raises(PretrainedWeightsError, match='is not a timm config.json'):
        read_checkpoint(tmp_path)


def test_predict_and_export_take_a_run_checkpoint_without_model(tiny, tmp_path, capsys):
    from PIL import Image

    run_checkpoint(tiny, tmp_path / 'best.pth')
    Image.new('RGB', (80, 80), (120, 90, 60)).save(tmp_path / 'face.png')
    out = tmp_path / 'r.json'
    assert main(['predict', str(tmp_path / 'face.png'), '--aligned', '--checkpoint', str(tmp_path / 'best.pth'),
                 '--output', str(out)]) == 0
    report = json.loads(out.read_text())
    assert report['labels'] == list(CLASSES) and report['model'] == 'transfer_fer_ir50'
    assert report['weights'] == f'checkpoint {tmp_path / "best.pth"}'
    pytest.importorskip('onnxscript')
    assert main(['export', '--checkpoint', str(tmp_path / 'best.pth'), '--format', 'torch-export',
                 '--out', str(tmp_path / 'm.pt2')]) == 0
    assert 'of transfer_fer_ir50, weights: checkpoint' in capsys.readouterr().out
