"""Pretrained weights through the Hub, offline: a local folder laid out as the Hub cache stands in for the Hub."""
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
from helpers import TINY
from huggingface_hub import constants as hf_constants
from hypothesis import example, given
from hypothesis import strategies as st
from source_layouts import face_evolve_ir_state_dict, legacy_vit_small_state_dict, make_hub_cache

import timm_fer  # noqa: F401
from timm_fer.cli import main
from timm_fer.constants import FERPLUS_LABELS, HF_HUB_ORG, PUBLISHED_ON_HUB, RAFDB_LABELS
from timm_fer.errors import CheckpointMismatchError, PretrainedWeightsError
from timm_fer.hub import default_repo_id, make_model_card, read_checkpoint, write_hub_folder


def _publish(model, tmp_path, cache, repo_id):
    folder = write_hub_folder(model, tmp_path / repo_id.split('/')[-1], make_model_card(model, command='test'))
    make_hub_cache(cache, repo_id, folder)
    return folder


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


UNPUBLISHED = ('ir_50.ms1m', 'transfer_fer_ir50.ms1m_in1k', 'transfer_fer_ir50.rafdb', 'transfer_fer_ir50.ferplus',
               'transfer_fer_ir50_b4.affectnet7')


def test_only_tags_whose_weights_load_are_listed_as_pretrained():
    assert timm.list_pretrained('*fer*') + timm.list_pretrained('ir_*') == [
        'transfer_fer_compact.fer2013', 'transfer_fer_compact.ferplus']
    assert PUBLISHED_ON_HUB == frozenset()  # published tags get their repo, under one organisation
    for name in UNPUBLISHED:
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg.hf_hub_id is None and not cfg.has_weights
        assert default_repo_id(*name.split('.')) == f'{HF_HUB_ORG}/{name}'  # where `timm-fer push` puts them
    rafdb, ferplus = (timm.models.get_pretrained_cfg(f'transfer_fer_ir50.{t}') for t in ('rafdb', 'ferplus'))
    assert rafdb.label_names == RAFDB_LABELS and rafdb.num_classes == 7 and '90.91' in ' '.join(rafdb.notes)
    assert ferplus.label_names == FERPLUS_LABELS and ferplus.num_classes == 8 and '90.83' in ' '.join(ferplus.notes)
    affectnet = timm.models.get_pretrained_cfg('transfer_fer_ir50_b4.affectnet7')
    assert affectnet.num_classes == 7 and '66.23' in ' '.join(affectnet.notes)


def test_round_trip_through_the_offline_hub_is_bit_identical(tmp_path, offline_hub, publish_tag):
    publish_tag('transfer_fer_ir50.rafdb')
    torch.manual_seed(1)
    source = timm.create_model('transfer_fer_ir50.rafdb').eval()
    folder = _publish(source, tmp_path, offline_hub, f'{HF_HUB_ORG}/transfer_fer_ir50.rafdb')
    config = json.loads((folder / 'config.json').read_text())
    assert config['architecture'] == 'transfer_fer_ir50' and config['num_classes'] == 7
    assert tuple(config['pretrained_cfg']['label_names']) == RAFDB_LABELS
    card = (folder / 'README.md').read_text()
    assert 'license: cc-by-nc-4.0' in card and '90.91' in card and 'Produced with `test`' in card

    x = torch.randn(2, 3, 112, 112)
    default_tag = timm.create_model('transfer_fer_ir50', pretrained=True).eval()
    by_hub_name = timm.create_model(f'hf-hub:{HF_HUB_ORG}/transfer_fer_ir50.rafdb', pretrained=True).eval()
    with torch.no_grad():
        expected = source(x)
        for model in (default_tag, by_hub_name):
            _assert_same_weights(model, source)
            assert torch.equal(model(x), expected)
    assert default_tag.pretrained_cfg['tag'] == 'rafdb'


def test_head_reset_in_chans_and_features_only_load_pretrained(tmp_path, offline_hub, publish_tag):
    publish_tag('transfer_fer_ir50.ferplus')
    torch.manual_seed(2)
    source = timm.create_model('transfer_fer_ir50.ferplus', **TINY).eval()
    _publish(source, tmp_path, offline_hub, f'{HF_HUB_ORG}/transfer_fer_ir50.ferplus')
    src = source.state_dict()

    reset = timm.create_model('transfer_fer_ir50.ferplus', pretrained=True, num_classes=3, **TINY)
    assert reset.head.out_features == 3
    assert all(torch.equal(v, src[k]) for k, v in reset.state_dict().items() if not k.startswith('head'))

    gray = timm.create_model('transfer_fer_ir50.ferplus', pretrained=True, in_chans=1, **TINY).eval()
    assert torch.allclose(gray.stem.conv.weight, src['stem.conv.weight'].sum(dim=1, keepdim=True))
    with torch.no_grad():
        gray_input = torch.rand(1, 1, 112, 112)
        assert torch.allclose(gray(gray_input), source(gray_input.expand(-1, 3, -1, -1)), atol=1e-5)

    features = timm.create_model('transfer_fer_ir50.ferplus', pretrained=True, features_only=True, **TINY).eval()
    with torch.no_grad():
        x = torch.randn(1, 3, 112, 112)
        expected = source.forward_intermediates(x, indices=features.feature_info.out_indices, intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(features(x), expected))


def test_ir_backbone_round_trip_and_local_face_evolve_file(tmp_path, offline_hub, publish_tag):
    publish_tag('ir_50.ms1m')
    torch.manual_seed(3)
    source = timm.create_model('ir_50.ms1m').eval()
    _publish(source, tmp_path, offline_hub, f'{HF_HUB_ORG}/ir_50.ms1m')
    _assert_same_weights(timm.create_model('ir_50', pretrained=True), source)

    original = face_evolve_ir_state_dict(seed=4)
    torch.save(original, tmp_path / 'backbone_ir50_ms1m_epoch120.pth')
    local = timm.create_model('ir_50', pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / 'backbone_ir50_ms1m_epoch120.pth')))
    assert torch.equal(local.stages[3][2].conv2.weight, original['body.23.res_layer.3.weight'])


def test_local_legacy_vit_file_initialises_the_encoder_only(tmp_path):
    original = legacy_vit_small_state_dict(seed=5)
    torch.save(original, tmp_path / 'vit_small_p16_224-15ec54c9.pth')
    torch.manual_seed(0)
    fresh = timm.create_model('transfer_fer_ir50.ms1m_in1k')
    torch.manual_seed(0)
    overlay = dict(file=str(tmp_path / 'vit_small_p16_224-15ec54c9.pth'))
    model = timm.create_model('transfer_fer_ir50.ms1m_in1k', pretrained=True, num_classes=7,
                              pretrained_cfg_overlay=overlay)
    assert torch.equal(model.blocks[5].mlp.fc1.weight, original['blocks.5.mlp.fc1.weight'])
    assert torch.equal(model.stem.conv.weight, fresh.stem.conv.weight)
    assert model.head.out_features == 7


def test_missing_weights_name_the_repo_the_offline_state_and_the_local_file_option(offline_hub, publish_tag):
    publish_tag('transfer_fer_ir50_b4.affectnet7')
    with pytest.raises(PretrainedWeightsError) as error:
        timm.create_model('transfer_fer_ir50_b4.affectnet7', pretrained=True)
    message = str(error.value)
    assert f"'{HF_HUB_ORG}/transfer_fer_ir50_b4.affectnet7'" in message
    assert 'offline' in message and 'pretrained_cfg_overlay=dict(file=' in message


def test_unpublished_weights_fail_at_once_naming_the_tags_that_load(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError('the Hub was asked for weights that are known not to be published')
    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', no_network)
    for name, tagged in (('transfer_fer_ir50', 'transfer_fer_ir50.rafdb'), ('vit_fer_ir50', 'vit_fer_ir50'),
                         ('ir_50.ms1m', 'ir_50.ms1m')):
        with pytest.raises(PretrainedWeightsError) as error:
            timm.create_model(name, pretrained=True)
        message = str(error.value)
        assert message.startswith(f'no weights have been published for {tagged} yet; the tags whose weights load '
                                  f'are transfer_fer_compact.fer2013, transfer_fer_compact.ferplus. ')
        assert f"timm.create_model('{tagged}', pretrained=True, pretrained_cfg_overlay=dict(file=" in message
    with pytest.raises(PretrainedWeightsError, match='^no checkpoint file at missing.pth: check the path.$'):
        timm.create_model('transfer_fer_ir50', pretrained=True, pretrained_cfg_overlay=dict(file='missing.pth'))


@pytest.mark.filterwarnings('ignore:Detected pickle protocol')
@given(st.binary(min_size=1, max_size=256))
@example(b'\xd8')  # the weights-only unpickler's UnpicklingError
@example(b't')  # IndexError
@example(b'j\x1b\x19\x8f\xe8')  # KeyError
@example(b'U[\xf4')  # UnicodeDecodeError
@example(b'\x8a\x9f')  # EOFError
def test_damaged_checkpoint_bytes_fail_clearly_whatever_the_unpickler_raises(damage):
    with tempfile.TemporaryDirectory() as folder:
        garbage = Path(folder) / 'garbage.pth'
        garbage.write_bytes(damage)
        with pytest.raises(PretrainedWeightsError, match='neither a safetensors file nor a tensor checkpoint'):
            read_checkpoint(garbage)
        with pytest.raises(PretrainedWeightsError, match='is not a tensor checkpoint'):
            timm.create_model('ir_18', pretrained=True, pretrained_cfg_overlay=dict(file=str(garbage)))


def test_bad_checkpoint_files_fail_clearly(tmp_path):
    pickled_object = tmp_path / 'object.pth'
    torch.save({'model': torch.nn.Linear(2, 2)}, pickled_object)
    with pytest.raises(PretrainedWeightsError, match='arbitrary pickled objects are never loaded'):
        read_checkpoint(pickled_object)
    with pytest.raises(PretrainedWeightsError, match='checkpoint not found: no file at'):
        read_checkpoint(tmp_path / 'missing.safetensors')
    resnet = tmp_path / 'resnet.pth'
    torch.save(timm.create_model('resnet18').state_dict(), resnet)
    with pytest.raises(CheckpointMismatchError, match='unexpected keys'):
        timm.create_model('ir_18', pretrained=True, pretrained_cfg_overlay=dict(file=str(resnet)))


@pytest.mark.slow
def test_convert_command_writes_a_loadable_hub_folder(tmp_path, offline_hub, capsys, publish_tag):
    torch.save(face_evolve_ir_state_dict(seed=6), tmp_path / 'ir.pth')
    torch.save(legacy_vit_small_state_dict(seed=7), tmp_path / 'vit.pth')
    out = tmp_path / 'hub' / 'transfer_fer_ir50.ms1m_in1k'
    argv = ['convert', '--model', 'transfer_fer_ir50.ms1m_in1k', '--face-evolve', str(tmp_path / 'ir.pth'),
            '--vit', str(tmp_path / 'vit.pth'), '--out', str(out)]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    assert 'timm-fer convert --model transfer_fer_ir50.ms1m_in1k' in (out / 'README.md').read_text()
    make_hub_cache(offline_hub, publish_tag('transfer_fer_ir50.ms1m_in1k'), out)
    model = timm.create_model('transfer_fer_ir50.ms1m_in1k', pretrained=True, num_classes=7)
    assert torch.equal(model.stem.conv.weight, read_checkpoint(tmp_path / 'ir.pth').state_dict['input_layer.0.weight'])

    assert main(argv) == 2
    assert 'already exists' in capsys.readouterr().err


def test_convert_failures_write_nothing(tmp_path, capsys):
    torch.save(timm.create_model('resnet18').state_dict(), tmp_path / 'resnet.pth')
    out = tmp_path / 'out'
    assert main(['convert', '--model', 'ir_50.ms1m', '--face-evolve', str(tmp_path / 'resnet.pth'),
                 '--out', str(out)]) == 2
    assert 'is not a face.evoLVe IR checkpoint' in capsys.readouterr().err
    assert main(['convert', '--model', 'ir_50.nope', '--checkpoint', str(tmp_path / 'resnet.pth'),
                 '--out', str(out)]) == 2
    assert 'unknown tag' in capsys.readouterr().err
    assert main(['convert', '--model', 'ir_50', '--checkpoint', str(tmp_path / 'resnet.pth'), '--out', str(out)]) == 2
    assert 'missing keys' in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / 'resnet.pth']


def test_push_dry_run_writes_the_folder_and_push_uploads_it(tmp_path, monkeypatch, capsys):
    torch.manual_seed(8)
    trained = timm.create_model('ir_18', num_classes=0)
    torch.save(trained.state_dict(), tmp_path / 'trained.pth')
    folder = tmp_path / 'ir_18'
    assert main(['push', str(folder), '--model', 'ir_18', '--checkpoint', str(tmp_path / 'trained.pth'),
                 '--metric', 'LFW 99.0 %', '--training', 'timm-fer train --epochs 3', '--dry-run']) == 0
    assert 'would be pushed to https://huggingface.co/timm-fer/ir_18' in capsys.readouterr().out
    card = (folder / 'README.md').read_text()
    assert '- LFW 99.0 %' in card and '## Training\n- timm-fer train --epochs 3' in card

    calls = []

    class FakeApi:
        def __init__(self, token=None, library_name=None):
            calls.append(('init', library_name))

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(('create_repo', repo_id, private, exist_ok))
            return huggingface_hub.RepoUrl(f'https://huggingface.co/{repo_id}')

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls.append(('upload_folder', repo_id, sorted(os.listdir(folder_path))))
            return f'https://huggingface.co/{repo_id}/commit/abc'

    monkeypatch.setattr(huggingface_hub, 'HfApi', FakeApi)
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', False)
    assert main(['push', str(folder), '--repo-id', 'someone/ir18-test', '--private']) == 0
    assert calls[1] == ('create_repo', 'someone/ir18-test', True, True)
    assert calls[2] == ('upload_folder', 'someone/ir18-test', ['README.md', 'config.json', 'model.safetensors'])

    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', True)
    assert main(['push', str(folder)]) == 2
    assert 'HF_HUB_OFFLINE' in capsys.readouterr().err


def test_offline_environment_variables_in_a_fresh_process(tmp_path):
    """What a user does: HF_HUB_OFFLINE=1 and HF_HUB_CACHE set before anything is imported."""
    torch.manual_seed(9)
    source = timm.create_model('transfer_fer_ir50.rafdb', **TINY).eval()
    cache = tmp_path / 'cache'
    _publish(source, tmp_path, cache, f'{HF_HUB_ORG}/transfer_fer_ir50.rafdb')
    torch.save(source.state_dict(), tmp_path / 'expected.pth')
    script = textwrap.dedent(f'''
        import timm, torch, timm_fer
        model = timm.create_model('hf-hub:{HF_HUB_ORG}/transfer_fer_ir50.rafdb', pretrained=True)
        expected = torch.load({str(tmp_path / 'expected.pth')!r}, weights_only=True)
        assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
        print('identical')
    ''')
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(cache))
    result = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'identical'
