"""``timm-fer train`` on a toy colour task: learning, exact resume, torchrun, recipes and error messages."""
import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from timm_fer.cli import main as cli_main
from timm_fer.cli.train import main as train_main
from timm_fer.hub import create_fer_model
from timm_fer.train import RESUME_DEFAULTS, _add_arguments, create_lr_scheduler, resolve_config

REPO_ROOT = Path(__file__).resolve().parents[1]
TOY_COLOURS = {'blue': (40, 60, 200), 'green': (50, 190, 60), 'red': (210, 50, 40)}
TINY_TRANSFER = ['--model', 'transfer_fer_ir50', '--img-size', '32', '--model-kwargs', 'stem_layers=(1, 1, 1)',
                 'stem_channels=(16, 16, 32)', 'embed_dim=32', 'depth=1', 'num_heads=2']
TINY_VIT = ['--model', 'vit_tiny_patch16_224', '--img-size', '32', '--model-kwargs', 'patch_size=8', 'embed_dim=32',
            'depth=1', 'num_heads=2']
TIMING_KEYS = ('images_per_second', 'epoch_seconds')


def write_toy_folder(root: Path, train_per_class: int = 8, val_per_class: int = 4) -> Path:
    """Class-per-folder toy faces whose class is their colour; 'blue' has half the images of the others."""
    rng = random.Random(0)
    for split, count in (('train', train_per_class), ('val', val_per_class)):
        for name, colour in TOY_COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count // 2 if name == 'blue' else count):
                image = Image.new('RGB', (24, 24), tuple(min(255, max(0, c + rng.randint(-40, 40))) for c in colour))
                image.putpixel((rng.randrange(24), rng.randrange(24)), (255, 255, 255))
                image.save(folder / f'{i}.png')
    return root


pytestmark = pytest.mark.usefixtures('one_torch_thread', 'offline_hub')


@pytest.fixture(scope='module')
def toy_data(tmp_path_factory) -> Path:
    return write_toy_folder(tmp_path_factory.mktemp('toy'), train_per_class=16, val_per_class=8)


def train_args(data: Path, output: Path, *extra: str) -> list:
    return ['--dataset', 'folder', '--data-dir', str(data), '--output', str(output), '--no-pretrained',
            '--workers', '0', '--batch-size', '8', *extra]


def read_metrics(output: Path, drop_timing: bool = True) -> list:
    lines = [json.loads(line) for line in (output / 'metrics.jsonl').read_text().splitlines()]
    return [{k: v for k, v in line.items() if not (drop_timing and k in TIMING_KEYS)} for line in lines]


def load_model_state(path: Path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=True)['model']


def run_torchrun(argv: list, timeout: float = 120) -> tuple:
    """Run ``torchrun --standalone --nproc-per-node 2 ARGV`` on CPU; on timeout end it and its workers."""
    env = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2', *argv]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f'torchrun did not finish in {timeout} s: {err[-3000:]}')
    return process.returncode, out, err


def test_toy_run_learns_and_writes_its_outputs(toy_data, tmp_path, capsys):
    output = tmp_path / 'run'
    argv = train_args(toy_data, output, *TINY_TRANSFER, '--epochs', '10', '--lr', '0.01', '--milestones', '7')
    assert cli_main(['train', *argv]) == 0
    printed = capsys.readouterr().out
    assert 'Recipe for folder' in printed and "'mad_prob': 0.6" in printed
    assert 'Image folder train: 40 images in 3 classes (blue 8, green 16, red 16)' in printed
    metrics = read_metrics(output, drop_timing=False)
    assert [line['epoch'] for line in metrics] == list(range(1, 11))
    assert [line['lr'] for line in metrics][5:8] == pytest.approx([0.01, 0.001, 0.001])
    assert sum(line['train_loss'] for line in metrics[-3:]) / 3 < 0.6 * metrics[0]['train_loss']
    assert metrics[-1]['eval_accuracy'] >= 0.8 and metrics[-1]['train_accuracy'] > 0.6
    assert all(line['images_per_second'] > 0 for line in metrics)
    assert {'last.pth', 'best.pth', 'eval-folder-val.json', 'eval-folder-val.png'} <= set(os.listdir(output))
    assert not [name for name in os.listdir(output) if name.endswith('.tmp')]
    report = json.loads((output / 'eval-folder-val.json').read_text())
    assert report['accuracy'] == metrics[-1]['eval_accuracy'] and report['classes'] == ['blue', 'green', 'red']


@pytest.mark.parametrize('schedule', [
    (),
    ('--sched', 'cosine', '--warmup', '1', '--smoothing', '0.1'),
])
def test_resume_after_a_kill_gives_bit_identical_weights(toy_data, tmp_path, schedule):
    common = [*TINY_TRANSFER, '--epochs', '3', '--lr', '0.01', '--checkpoint-every-steps', '4', *schedule]
    assert train_main(train_args(toy_data, tmp_path / 'whole', *common)) == 0
    killed = tmp_path / 'killed'
    assert train_main(train_args(toy_data, killed, *common, '--stop-after-steps', '11')) == 0
    saved = torch.load(killed / 'last.pth', weights_only=True)
    assert (saved['epoch'], saved['step_in_epoch'], saved['global_step']) == (1, 2, 8)
    if not schedule:  # a checkpoint of a version before these settings existed resumes with their defaults
        saved['config'] = {k: v for k, v in saved['config'].items() if k not in RESUME_DEFAULTS}
        torch.save(saved, killed / 'last.pth')
    assert train_main(train_args(toy_data, killed, *common, '--resume')) == 0
    whole, resumed = load_model_state(tmp_path / 'whole' / 'last.pth'), load_model_state(killed / 'last.pth')
    assert all(torch.equal(whole[key], resumed[key]) for key in whole)
    assert read_metrics(killed) == read_metrics(tmp_path / 'whole')


@given(total=st.integers(2, 400), warmup_fraction=st.floats(0, 0.99), milestone_fractions=st.lists(
    st.floats(0.01, 0.99), max_size=3), sched=st.sampled_from(['step', 'cosine']))
def test_lr_schedules_warm_up_then_peak_then_never_rise(total, warmup_fraction, milestone_fractions, sched):
    warmup = int(warmup_fraction * total)
    milestones = sorted({max(warmup + 1, int(f * total)) for f in milestone_fractions})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = create_lr_scheduler(optimizer, sched, total, milestones, warmup)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        scheduler.step()
    assert lrs[:warmup] == pytest.approx([0.1 * (step + 1) / warmup for step in range(warmup)])
    assert lrs[warmup] == pytest.approx(0.1) and max(lrs) == pytest.approx(0.1)
    assert all(later <= earlier + 1e-12 for earlier, later in zip(lrs[warmup:], lrs[warmup + 1:]))
    if sched == 'cosine':
        assert lrs[warmup + (total - warmup) // 2] == pytest.approx(0.05, abs=0.1 * math.pi / (total - warmup))
        assert 0 < lrs[-1] <= 0.1 * (math.pi / (total - warmup)) ** 2 / 4 + 1e-12
    else:
        assert lrs[-1] == pytest.approx(0.1 * 0.1 ** len(milestones))


def test_label_smoothing_mixes_the_uniform_target_in_linearly(toy_data, tmp_path):
    """With lr 0 every run sees the same logits, so the loss is affine in the smoothing mass."""
    losses = []
    for smoothing in ('0', '0.3', '0.6'):
        output = tmp_path / smoothing
        assert train_main(train_args(toy_data, output, *TINY_VIT, '--epochs', '1', '--lr', '0', '--amp', 'none',
                                     '--smoothing', smoothing, '--no-eval')) == 0
        losses.append(read_metrics(output)[0]['train_loss'])
    assert losses[1] != pytest.approx(losses[0], abs=1e-3)
    assert losses[2] - losses[1] == pytest.approx(losses[1] - losses[0], abs=1e-5)


def test_gradient_accumulation_matches_the_full_batch(toy_data, tmp_path):
    common = [*TINY_VIT, '--epochs', '2', '--lr', '0.05', '--amp', 'none']  # bf16 sums differ by batch split
    assert train_main(train_args(toy_data, tmp_path / 'full', *common)) == 0
    assert train_main(train_args(toy_data, tmp_path / 'accum', *common, '--grad-accum-steps', '2')) == 0
    full, accum = load_model_state(tmp_path / 'full' / 'last.pth'), load_model_state(tmp_path / 'accum' / 'last.pth')
    assert all(torch.allclose(full[key], accum[key], atol=1e-5) for key in full)


def test_bf16_autocast_run_with_every_image_once(toy_data, tmp_path, capsys):
    output = tmp_path / 'bf16'
    extra = ['--epochs', '1', '--amp', 'bf16', '--sampler', 'uniform', '--weight-decay', '5e-4']
    assert train_main(train_args(toy_data, output, *TINY_TRANSFER, *extra)) == 0
    assert 'weight decay 0.0005' in capsys.readouterr().out
    (metrics,) = read_metrics(output)
    assert metrics['step'] == 40 // 8  # 40 images once, in batches of 8
    assert torch.isfinite(torch.tensor(metrics['train_loss'])) and 0 <= metrics['eval_accuracy'] <= 1


def test_torchrun_two_processes_match_one(toy_data, tmp_path):
    """Same global batch on 2 gloo processes: same data, augmentation and (BatchNorm-free model) weights."""
    common = [*TINY_VIT, '--epochs', '3', '--lr', '0.05', '--amp', 'none']  # bf16 sums differ by batch split
    assert train_main(train_args(toy_data, tmp_path / 'one', *common)) == 0
    returncode, out, err = run_torchrun(['-m', 'timm_fer.train', *train_args(toy_data, tmp_path / 'two', *common)])
    assert returncode == 0, err[-3000:]
    assert 'on 2 process(es)' in out and '4 per process x 2 processes' in out
    assert len(torch.load(tmp_path / 'two' / 'last.pth', weights_only=True)['rng_states']) == 2
    one, two = read_metrics(tmp_path / 'one'), read_metrics(tmp_path / 'two')
    assert len(one) == len(two) == 3
    for single, multi in zip(one, two):
        assert single.keys() == multi.keys()
        for key, value in single.items():
            assert multi[key] == pytest.approx(value, abs=1e-5), key
    weights_one, weights_two = load_model_state(tmp_path / 'one' / 'last.pth'), load_model_state(
        tmp_path / 'two' / 'last.pth')
    assert all(torch.allclose(weights_one[key], weights_two[key], atol=1e-5) for key in weights_one)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    _add_arguments(parser)
    return parser.parse_args(['--data-dir', 'x', *argv])


class _OneProcess:
    world_size, distributed, device = 1, False, torch.device('cpu')


@pytest.mark.parametrize('argv, expected', [
    (('--dataset', 'ferplus'), dict(epochs=40, iterations=None, lr=1e-3, milestones=(15, 30), batch_size=256,
                                    momentum=0.9, weight_decay=0., metric='accuracy', sampler='balanced',
                                    model_kwargs=dict(num_branches=2, mad_prob=0.6, msad_prob=0.3))),
    (('--dataset', 'affectnet7'), dict(epochs=None, iterations=20_000, lr=3e-4, milestones=(9_600, 19_200),
                                       metric='mean_class_accuracy',
                                       model_kwargs=dict(num_branches=4, mad_prob=0.2, msad_prob=0.6))),
    (('--dataset', 'rafdb', '--epochs', '20', '--model-kwargs', 'mad_prob=0.5'),
     dict(epochs=20, milestones=(8, 15), model_kwargs=dict(num_branches=2, mad_prob=0.5, msad_prob=0.3))),
    (('--dataset', 'rafdb', '--model', 'vit_fer_ir50', '--milestones', '5', '--lr', '0.01'),
     dict(milestones=(5,), lr=0.01, model_kwargs={})),
    (('--dataset', 'ferplus', '--sampler', 'uniform', '--weight-decay', '5e-4'),
     dict(sampler='uniform', weight_decay=5e-4, sched='step', warmup=0, smoothing=0.)),
    (('--dataset', 'ferplus', '--sched', 'cosine', '--warmup', '2', '--smoothing', '0.1'),
     dict(sched='cosine', milestones=(), warmup=2, smoothing=0.1)),
])
def test_recipes_and_overrides(argv, expected):
    config = resolve_config(_parse(*argv), _OneProcess())
    assert {key: config[key] for key in expected} == expected


@pytest.mark.parametrize('extra, message', [
    (('--batch-size', '9', '--grad-accum-steps', '2'), 'global batch: it must divide by processes x'),
    (('--batch-size', '64'), 'an epoch has 48 images, fewer than the global batch 64'),
    (('--sampler', 'uniform', '--batch-size', '48'), 'an epoch has 40 images, fewer than the global batch 48'),
    (('--model', 'no_such_model'), "unknown model 'no_such_model'"),
    (('--img-size', '30'), 'img_size must be a multiple of 8'),
    (('--resume',), 'nothing to resume'),
    (('--sched', 'cosine', '--milestones', '3'), 'drop them with --sched cosine'),
    (('--epochs', '2', '--warmup', '2'), '--warmup must be at least 0 and shorter than the run (2), got 2'),
    (('--smoothing', '1'), '--smoothing is a probability mass in [0, 1), got 1.0'),
])
def test_bad_options_fail_with_one_clear_line(toy_data, tmp_path, capsys, extra, message):
    assert train_main(train_args(toy_data, tmp_path / 'run', *TINY_TRANSFER, *extra)) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith('timm-fer train: error: ') and message in error


def test_missing_dataset_and_unknown_dataset(tmp_path, capsys):
    assert train_main(train_args(tmp_path / 'nowhere', tmp_path / 'run', '--epochs', '1')) == 2
    assert 'image folder not found: ' + str(tmp_path / 'nowhere' / 'train') in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(['--dataset', 'raf-db', '--data-dir', str(tmp_path)])
    assert "invalid choice: 'raf-db'" in capsys.readouterr().err


def test_finished_run_is_never_overwritten_and_resume_checks_settings(toy_data, tmp_path, capsys):
    output = tmp_path / 'run'
    assert train_main(train_args(toy_data, output, *TINY_TRANSFER, '--epochs', '1')) == 0
    before = {name: (output / name).read_bytes() for name in os.listdir(output)}
    assert train_main(train_args(toy_data, output, *TINY_TRANSFER, '--epochs', '1')) == 2
    assert 'already holds a run (last.pth): pass --resume' in capsys.readouterr().err
    assert train_main(train_args(toy_data, output, *TINY_TRANSFER, '--epochs', '2', '--lr', '0.5', '--resume')) == 2
    error = capsys.readouterr().err
    assert 'was written by a run with other settings (epochs 1 -> 2; ' in error and 'lr 0.001 -> 0.5' in error
    assert {name: (output / name).read_bytes() for name in os.listdir(output)} == before


def test_initialisation_sources(toy_data, tmp_path, capsys):
    kwargs = dict(stem_layers=(1, 1, 1), stem_channels=(16, 16, 32), embed_dim=32, depth=1, num_heads=2)
    model, source = create_fer_model('transfer_fer_ir50', 3, 32, kwargs, pretrained_tag='ms1m_in1k')
    assert source == 'random initialisation'
    assert 'No transfer_fer_ir50.ms1m_in1k weights' in capsys.readouterr().out
    output = tmp_path / 'run'
    assert train_main(train_args(toy_data, output, *TINY_TRANSFER, '--epochs', '1')) == 0
    loaded, source = create_fer_model('transfer_fer_ir50', 3, 32, kwargs, initial_checkpoint=str(output / 'last.pth'))
    assert source.startswith('initial checkpoint')
    trained = load_model_state(output / 'last.pth')
    assert all(torch.equal(value, trained[key]) for key, value in loaded.state_dict().items())
    body = [key for key in trained if not key.startswith('head.')]
    assert not all(torch.equal(model.state_dict()[key], trained[key]) for key in body)
    two_classes, _ = create_fer_model('transfer_fer_ir50', 2, 32, kwargs, initial_checkpoint=str(output / 'last.pth'))
    assert all(torch.equal(two_classes.state_dict()[key], trained[key]) for key in body)
    assert two_classes.head.out_features == 2
