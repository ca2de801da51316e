"""Post-hoc logit adjustment folded into the classifier: the property, and ``timm-fer push --logit-adjustment``."""
import math

import pytest
import timm
import torch
from helpers import TINY, train_args, write_toy_ferplus
from hypothesis import given, settings
from hypothesis import strategies as st

import timm_fer  # noqa: F401
from timm_fer.cli import main
from timm_fer.cli.train import main as train_main
from timm_fer.engine import training_class_prior
from timm_fer.errors import ConfigError
from timm_fer.hub import fold_logit_adjustment, read_checkpoint

pytestmark = pytest.mark.usefixtures('one_torch_thread', 'offline_hub')

priors = st.lists(st.floats(0.001, 1.), min_size=7, max_size=7).map(lambda w: [x / sum(w) for x in w])


@settings(deadline=None, max_examples=20)
@given(priors, st.floats(0., 2.), st.integers(0, 2 ** 31))
def test_folded_adjustment_lowers_each_logit_by_tau_log_prior(prior, tau, seed):
    torch.manual_seed(seed % 1000)
    model = timm.create_model('transfer_fer_ir50', **TINY).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        before = model(x)
        fold_logit_adjustment(model, prior, tau)
        after = model(x)
    assert torch.allclose(after, before - tau * torch.tensor(prior).log(), atol=1e-4)


def test_bad_priors_and_tau_are_refused():
    model = timm.create_model('transfer_fer_ir50', **TINY)
    for prior, tau in (([0.5, 0.5], 1.), ([0.] + [1 / 6] * 6, 1.), ([1 / 7] * 7, -1.), ([1 / 7] * 7, math.nan)):
        with pytest.raises(ConfigError, match='positive share for each of the 7 classes and tau >= 0'):
            fold_logit_adjustment(model, prior, tau)


def _unanimous(label: int) -> list:
    return [10 if column == label else 0 for column in range(10)]


def test_push_folds_the_prior_of_the_run_training_set(tmp_path, capsys):
    data = write_toy_ferplus(tmp_path / 'toy', _unanimous, per_class=4, classes=8)
    run = tmp_path / 'run'
    argv = train_args(data, run, '--model', 'transfer_fer_compact', '--epochs', '1', '--sampler', 'uniform')
    assert train_main(['--dataset', 'ferplus', *argv[2:]]) == 0
    checkpoint = run / 'last.pth'
    counts = torch.arange(4, 12, dtype=torch.float)  # class c has 4 + c training faces
    assert training_class_prior(checkpoint) == pytest.approx((counts / counts.sum()).tolist())
    folders = {tau: tmp_path / f'tau{tau}' for tau in ('0', '1.5')}
    for tau, folder in folders.items():
        assert main(['push', str(folder), '--model', 'transfer_fer_compact.ferplus', '--checkpoint', str(checkpoint),
                     '--logit-adjustment', tau, '--dry-run']) == 0
    plain, adjusted = (read_checkpoint(folder).state_dict['head.bias'] for folder in folders.values())
    assert torch.allclose(adjusted - plain, -1.5 * (counts / counts.sum()).log())
    assert 'post-hoc logit adjustment folded into the classifier bias: tau 1.5' in (
        folders['1.5'] / 'README.md').read_text()

    assert main(['push', str(tmp_path / 'no'), '--logit-adjustment', '1']) == 2
    assert 'give --model and --checkpoint' in capsys.readouterr().err
    torch.save(read_checkpoint(checkpoint).state_dict, tmp_path / 'weights.pth')
    assert main(['push', str(tmp_path / 'no'), '--model', 'transfer_fer_compact.ferplus', '--checkpoint',
                 str(tmp_path / 'weights.pth'), '--logit-adjustment', '1', '--dry-run']) == 2
    assert 'is not a checkpoint of timm-fer train, so it names no training set' in capsys.readouterr().err


def test_push_folds_the_temperature_after_the_adjustment(tmp_path):
    data = write_toy_ferplus(tmp_path / 'toy', _unanimous, per_class=4, classes=8)
    run = tmp_path / 'run'
    argv = train_args(data, run, '--model', 'transfer_fer_compact', '--epochs', '1', '--sampler', 'uniform')
    assert train_main(['--dataset', 'ferplus', *argv[2:]]) == 0
    folders = {name: tmp_path / name for name in ('plain', 'scaled')}
    for name, extra in (('plain', []), ('scaled', ['--temperature', '0.5'])):
        assert main(['push', str(folders[name]), '--model', 'transfer_fer_compact.ferplus', '--checkpoint',
                     str(run / 'last.pth'), '--logit-adjustment', '0.4', '--dry-run', *extra]) == 0
    plain, scaled = (read_checkpoint(folder).state_dict for folder in folders.values())
    for key in ('head.weight', 'head.bias'):
        torch.testing.assert_close(scaled[key], plain[key] / 0.5)
    assert 'logits / 0.5' in (folders['scaled'] / 'README.md').read_text()
    assert main(['push', str(tmp_path / 'bad'), '--model', 'transfer_fer_compact.ferplus', '--checkpoint',
                 str(run / 'last.pth'), '--temperature', '0', '--dry-run']) == 2


def test_push_writes_the_weight_space_ensemble_of_a_fine_tuned_run_and_its_base(tmp_path):
    data = write_toy_ferplus(tmp_path / 'toy', _unanimous, per_class=4, classes=8)
    base, tuned = tmp_path / 'base', tmp_path / 'tuned'
    argv = train_args(data, base, '--model', 'transfer_fer_compact', '--epochs', '1', '--sampler', 'uniform')
    assert train_main(['--dataset', 'ferplus', *argv[2:]]) == 0
    argv = train_args(data, tuned, '--model', 'transfer_fer_compact', '--epochs', '1', '--sampler', 'uniform',
                      '--initial-checkpoint', str(base / 'last.pth'), '--lr', '0.5')
    assert train_main(['--dataset', 'ferplus', *argv[2:]]) == 0
    folders = {}
    for name, extra in (('base', ['--checkpoint', str(base / 'last.pth')]),
                        ('tuned', ['--checkpoint', str(tuned / 'last.pth')]),
                        ('soup', ['--checkpoint', str(tuned / 'last.pth'), '--ensemble-base', str(base / 'last.pth'),
                                  '--ensemble-weight', '0.25'])):
        folders[name] = tmp_path / f'hub-{name}'
        assert main(['push', str(folders[name]), '--model', 'transfer_fer_compact.ferplus', *extra, '--dry-run']) == 0
    weights = {name: read_checkpoint(folder).state_dict for name, folder in folders.items()}
    moved = [key for key in weights['base'] if weights['base'][key].is_floating_point()
             and not torch.equal(weights['base'][key], weights['tuned'][key])]
    assert moved
    for key in moved:
        torch.testing.assert_close(weights['soup'][key], 0.75 * weights['base'][key] + 0.25 * weights['tuned'][key])
    assert '0.25 x fine-tuned + 0.75 x last.pth' in (folders['soup'] / 'README.md').read_text()
    assert main(['push', str(tmp_path / 'bad'), '--model', 'transfer_fer_compact.ferplus', '--checkpoint',
                 str(tuned / 'last.pth'), '--ensemble-base', str(base / 'last.pth'), '--ensemble-weight', '2',
                 '--dry-run']) == 2
    assert not (tmp_path / 'bad').exists()
