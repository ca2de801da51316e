"""``timm-fer train`` on a toy colour task: learning, exact resume, torchrun, recipes and error messages."""
import argparse
import json
import math
import os
from pathlib import Path

import pytest
import torch
from helpers import TINY_TRANSFER, run_torchrun, train_args, write_toy_ferplus, write_toy_folder
from hypothesis import given
from hypothesis import strategies as st
from torch.optim.lr_scheduler import MultiStepLR

from timm_fer.cli import main as cli_main
from timm_fer.cli.train import _add_arguments, config_from_args
from timm_fer.cli.train import main as train_main
from timm_fer.engine import TrainConfig, evaluate_checkpoint, train, training_class_prior
from timm_fer.engine.scheduler import create_lr_scheduler
from timm_fer.errors import ConfigError
from timm_fer.hub import create_fer_model, read_checkpoint

TINY_VIT = ['--model', 'vit_tiny_patch16_224', '--img-size', '32', '--model-kwargs', 'patch_size=8', 'embed_dim=32',
            'depth=1', 'num_heads=2']
TIMING_KEYS = ('images_per_second', 'epoch_seconds')


pytestmark = pytest.mark.usefixtures('one_torch_thread', 'offline_hub')


@pytest.fixture(scope='module')
def toy_data(tmp_path_factory) -> Path:
    return write_toy_folder(tmp_path_factory.mktemp('toy'), train_per_class=16, val_per_class=8)


def read_metrics(output: Path, drop_timing: bool = True) -> list:
    lines = [json.loads(line) for line in (output / 'metrics.jsonl').read_text().splitlines()]
    return [{k: v for k, v in line.items() if not (drop_timing and k in TIMING_KEYS)} for line in lines]


def load_model_state(path: Path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=True)['model']


def test_toy_run_learns_and_writes_its_outputs(toy_data, tmp_path, capsys):
    output = tmp_path / 'run'
    argv = train_args(toy_data, output, *TINY_TRANSFER, '--epochs', '10', '--lr', '0.01', '--milestones', '7')
    assert cli_main(['train', *argv]) == 0
    printed = capsys.readouterr().out
    assert 'Recipe for folder' in printed and 'model        transfer_fer_ir50 {' in printed
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
    ('--ema-decay', '0.9', '--in-memory'),
    ('--zoom', '0.8', '1.25', '--photometric', '0.5', '--degrade', '0.5'),
])
def test_resume_after_a_kill_gives_bit_identical_weights(toy_data, tmp_path, schedule):
    common = [*TINY_TRANSFER, '--epochs', '3', '--lr', '0.01', '--checkpoint-every-steps', '4', *schedule]
    assert train_main(train_args(toy_data, tmp_path / 'whole', *common)) == 0
    killed = tmp_path / 'killed'
    assert train_main(train_args(toy_data, killed, *common, '--stop-after-steps', '11')) == 0
    saved = torch.load(killed / 'last.pth', weights_only=True)
    assert (saved['epoch'], saved['step_in_epoch'], saved['global_step']) == (1, 2, 8)
    if not schedule:  # a checkpoint of a version before these settings and timm's schedulers resumes with defaults
        saved['config'] = {k: v for k, v in saved['config'].items() if k not in ('sched', 'warmup', 'smoothing')}
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
        saved['scheduler'] = MultiStepLR(optimizer, [6, 12], gamma=0.1).state_dict()
        torch.save(saved, killed / 'last.pth')
    assert train_main(train_args(toy_data, killed, *common, '--resume')) == 0
    for weights in ('model', 'model_ema') if '--ema-decay' in schedule else ('model',):
        whole, resumed = (torch.load(path, weights_only=True)[weights]
                          for path in (tmp_path / 'whole' / 'last.pth', killed / 'last.pth'))
        assert all(torch.equal(whole[key], resumed[key]) for key in whole)
    assert read_metrics(killed) == read_metrics(tmp_path / 'whole')


def test_faces_in_memory_train_exactly_as_streamed_from_files(toy_data, tmp_path, capsys):
    common = [*TINY_TRANSFER, '--epochs', '2', '--lr', '0.01']
    assert train_main(train_args(toy_data, tmp_path / 'files', *common, '--workers', '2')) == 0
    assert train_main(train_args(toy_data, tmp_path / 'memory', *common, '--in-memory')) == 0
    assert 'Training faces in memory: (40, 3, 32, 32) uint8' in capsys.readouterr().out
    files, memory = (load_model_state(tmp_path / run / 'last.pth') for run in ('files', 'memory'))
    assert all(torch.equal(files[key], memory[key]) for key in files)


def _votes(label: int, spread: int) -> list:
    votes = [0] * 10
    votes[label] = 10 - spread
    votes[(label + 1) % 3] += spread
    return votes


def test_soft_labels_are_the_vote_distributions(tmp_path):
    """Unanimous votes train exactly as majority labels; with lr 0 (same logits in every run) the loss is affine in
    the share of votes moved to another class, as a cross-entropy on the vote distribution is."""
    common = [*TINY_TRANSFER, '--img-size', '48', '--epochs', '1', '--amp', 'none', '--sampler', 'uniform']
    runs = {'hard': (0, [], '0.01'), 'soft': (0, ['--soft-labels'], '0.01')}
    runs.update({f'spread{spread}': (spread, ['--soft-labels'], '0') for spread in (0, 2, 4)})
    for name, (spread, flags, lr) in runs.items():
        data = write_toy_ferplus(tmp_path / f'data-{name}', lambda label: _votes(label, spread))
        argv = train_args(data, tmp_path / name, *common, '--lr', lr, *flags)
        assert train_main(['--dataset', 'ferplus', *argv[2:]]) == 0
    hard, soft = load_model_state(tmp_path / 'hard' / 'last.pth'), load_model_state(tmp_path / 'soft' / 'last.pth')
    assert all(torch.allclose(hard[key], soft[key], atol=1e-6) for key in hard)
    losses = [read_metrics(tmp_path / f'spread{spread}')[0]['train_loss'] for spread in (0, 2, 4)]
    assert losses[1] != pytest.approx(losses[0], abs=1e-3)
    assert losses[2] - losses[1] == pytest.approx(losses[1] - losses[0], abs=1e-5)


def test_neutral_vote_weight_changes_the_loss_of_mixed_faces_only(tmp_path, capsys):
    """With lr 0 every run sees the same logits: unanimous faces give the same loss at any neutral weight, faces
    with votes split between neutral and another class do not."""
    common = [*TINY_TRANSFER, '--img-size', '48', '--epochs', '1', '--amp', 'none', '--sampler', 'uniform', '--lr',
              '0', '--soft-labels']
    losses = {}
    for spread in (0, 4):
        data = write_toy_ferplus(tmp_path / f'data{spread}', lambda label: _votes(label, spread))
        for weight in ('1', '0.5'):
            argv = train_args(data, tmp_path / f'run{spread}-{weight}', *common, '--neutral-vote-weight', weight)
            assert train_main(['--dataset', 'ferplus', *argv[2:]]) == 0
            losses[spread, weight] = read_metrics(tmp_path / f'run{spread}-{weight}')[0]['train_loss']
    assert 'vote distributions, no label smoothing, neutral votes x0.5' in capsys.readouterr().out
    assert losses[0, '0.5'] == pytest.approx(losses[0, '1'], abs=1e-6)
    assert losses[4, '0.5'] != pytest.approx(losses[4, '1'], abs=1e-3)


def _write_original_labels(data: Path, shift: int) -> Path:
    """fer2013new.csv and fer2013_original_labels.csv for a toy FERPlus folder: each face's original label is its
    FERPlus class moved on by ``shift`` (toy classes are neutral, happiness, surprise: FER2013 6, 3, 5)."""
    fer2013 = {0: 6, 1: 3, 2: 5}
    new, original = ['Usage,Image name,' + ','.join(['v'] * 10) + '\n'], ['row,image,usage,fer2013_label\n']
    for folder, usage in (('FER2013Train', 'Training'), ('FER2013Valid', 'PublicTest')):
        for line in (data / folder / 'label.csv').read_text().splitlines():
            name, votes = line.split(',')[0], line.split('",')[1]
            label = int(name[3:6])
            original.append(f'{len(new) - 1},{name},{usage},{fer2013[(label + shift) % 3]}\n')
            new.append(f'{usage},{name},{votes}\n')
    (data / 'fer2013new.csv').write_text(''.join(new))
    path = data / 'fer2013_original_labels.csv'
    path.write_text(''.join(original))
    return path


def test_original_labels_mix_into_the_target_and_are_scored(tmp_path, capsys):
    """With lr 0 (same logits in every run): weight 0 trains on the old target (the same loss as without the
    original labels), weight 1 on other labels; every evaluation scores the intended expressions too."""
    data = write_toy_ferplus(tmp_path / 'data', lambda label: _votes(label, 0))
    labels = _write_original_labels(data, shift=1)
    common = [*TINY_TRANSFER, '--img-size', '48', '--epochs', '1', '--amp', 'none', '--sampler', 'uniform', '--lr',
              '0', '--soft-labels']
    losses = {}
    for name, flags in {'none': [], 'a0': ['--original-labels', str(labels)],
                        'a1': ['--original-labels', str(labels), '--original-label-weight', '1',
                               '--metric', 'intended_mean_class_accuracy']}.items():
        argv = train_args(data, tmp_path / name, *common, *flags)
        assert train_main(['--dataset', 'ferplus', *argv[2:]]) == 0
        losses[name] = read_metrics(tmp_path / name)[0]
    assert losses['a0']['train_loss'] == pytest.approx(losses['none']['train_loss'], abs=1e-6)
    assert losses['a1']['train_loss'] != pytest.approx(losses['none']['train_loss'], abs=1e-3)
    assert 'eval_intended_accuracy' not in losses['none']
    # shifted by one class, the intended labels agree with the majority on no face
    assert losses['a1']['eval_intended_accuracy'] + losses['a1']['eval_accuracy'] <= 1 + 1e-9
    assert 'mixed with the original labels x1' in capsys.readouterr().out
    # the logit adjustment's prior of such a run: its targets' mean, here the shifted classes' shares
    prior = training_class_prior(tmp_path / 'a1' / 'last.pth')
    assert prior[:3] == pytest.approx([10 / 27, 8 / 27, 9 / 27]) and sum(prior) == pytest.approx(1)
    with pytest.raises(ConfigError, match='add --original-labels'):
        TrainConfig.from_recipe('ferplus', str(data), original_label_weight=0.5)
    with pytest.raises(ConfigError, match='add --original-labels'):
        TrainConfig.from_recipe('ferplus', str(data), metric='intended_accuracy')
    with pytest.raises(ConfigError, match='ferplus only'):
        TrainConfig.from_recipe('rafdb', str(data), original_labels=str(labels))


def test_weight_average_is_evaluated_and_served(toy_data, tmp_path):
    output = tmp_path / 'ema'
    assert train_main(train_args(toy_data, output, *TINY_TRANSFER, '--epochs', '3', '--lr', '0.01',
                                 '--ema-decay', '0.5', '--amp', 'none')) == 0
    saved = torch.load(output / 'last.pth', weights_only=True)
    assert not all(torch.equal(saved['model'][key], saved['model_ema'][key]) for key in saved['model'])
    served = read_checkpoint(output / 'last.pth')
    assert all(torch.equal(served.state_dict[key], saved['model_ema'][key]) for key in saved['model_ema'])
    metrics = read_metrics(output)
    assert all({'raw_eval_accuracy', 'raw_eval_mean_class_accuracy', 'eval_accuracy'} <= set(line) for line in metrics)
    result = evaluate_checkpoint(str(output / 'last.pth'), str(toy_data), amp='none', output=str(tmp_path / 'eval'),
                                 log=lambda _: None)
    assert result.report.accuracy == metrics[-1]['eval_accuracy']


@given(total=st.integers(2, 400), warmup_fraction=st.floats(0, 0.99), milestone_fractions=st.lists(
    st.floats(0.01, 0.99), max_size=3), sched=st.sampled_from(['step', 'cosine']))
def test_lr_schedules_warm_up_then_peak_then_never_rise(total, warmup_fraction, milestone_fractions, sched):
    warmup = int(warmup_fraction * total)
    milestones = sorted({max(warmup + 1, int(f * total)) for f in milestone_fractions})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = create_lr_scheduler(optimizer, sched, total, milestones, warmup)
    lrs = []
    for step in range(total):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        scheduler.step_update(step + 1)
    assert lrs[:warmup] == pytest.approx([0.1 * step / warmup for step in range(warmup)])
    assert lrs[warmup] == pytest.approx(0.1) and max(lrs) == pytest.approx(0.1)
    assert all(later <= earlier + 1e-12 for earlier, later in zip(lrs[warmup:], lrs[warmup + 1:]))
    if sched == 'cosine':
        assert lrs[warmup + (total - warmup) // 2] == pytest.approx(0.05, abs=0.1 * math.pi / (total - warmup))
        assert 0 < lrs[-1] <= 0.1 * (math.pi / (total - warmup)) ** 2 / 4 + 1e-12
    else:
        decays = [sum(step >= milestone for milestone in milestones) for step in range(warmup, total)]
        assert lrs[warmup:] == pytest.approx([0.1 * 0.1 ** count for count in decays])


def test_label_smoothing_mixes_the_uniform_target_in_linearly(toy_data, tmp_path):
    """With lr 0 every run sees the same logits, so the loss is affine in the smoothing mass (Python API)."""
    losses = []
    for smoothing in (0., 0.3, 0.6):
        config = TrainConfig.from_recipe(
            'folder', str(toy_data), output=str(tmp_path / str(smoothing)), pretrained_tag=None, workers=0,
            batch_size=8, model='vit_tiny_patch16_224', img_size=32,
            model_kwargs=dict(patch_size=8, embed_dim=32, depth=1, num_heads=2), epochs=1, lr=0., amp='none',
            smoothing=smoothing, evaluate=False)
        result = train(config, log=lambda _: None)
        assert result.finished and result.global_step == 6 and result.best_metric is None
        losses.append(read_metrics(Path(result.output))[0]['train_loss'])
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


@pytest.mark.slow
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


@pytest.mark.parametrize('overrides, expected', [
    (dict(dataset='ferplus'), dict(epochs=40, iterations=None, lr=1e-3, milestones=(15, 30), batch_size=256,
                                   momentum=0.9, weight_decay=0., metric='accuracy', sampler='balanced',
                                   eval_split='valid', model='transfer_fer_ir50', model_kwargs={})),
    (dict(dataset='affectnet7'), dict(epochs=None, iterations=20_000, lr=3e-4, milestones=(9_600, 19_200),
                                      metric='mean_class_accuracy', model='transfer_fer_ir50_b4', model_kwargs={},
                                      output=os.path.join('runs', 'affectnet7-transfer_fer_ir50_b4'))),
    (dict(dataset='rafdb', epochs=20, model_kwargs=dict(mad_prob=0.5)),
     dict(epochs=20, milestones=(8, 15), model_kwargs=dict(mad_prob=0.5))),
    (dict(dataset='rafdb', model='vit_fer_ir50', milestones=[5], lr=0.01),
     dict(milestones=(5,), lr=0.01, model_kwargs={}, output=os.path.join('runs', 'rafdb-vit_fer_ir50'))),
    (dict(dataset='ferplus', sampler='uniform', weight_decay=5e-4),
     dict(sampler='uniform', weight_decay=5e-4, sched='step', warmup=0, smoothing=0.)),
    (dict(dataset='ferplus', sched='cosine', warmup=2, smoothing=0.1),
     dict(sched='cosine', milestones=(), warmup=2, smoothing=0.1)),
])
def test_recipes_and_overrides(overrides, expected):
    config = TrainConfig.from_recipe(data_dir='x', **overrides)
    assert {key: getattr(config, key) for key in expected} == expected
    assert config.world_size is None and config.workers is None  # set by the processes that train


def test_flags_give_the_config_of_the_same_python_arguments():
    args = _parse('--dataset', 'rafdb', '--epochs', '20', '--model-kwargs', 'mad_prob=0.5', 'img_size=64',
                  '--no-eval', '--no-pretrained', '--no-augment', '--classes', 'a,b', '--sched', 'cosine',
                  '--warmup', '1', '--no-channels-last')
    assert config_from_args(args) == TrainConfig.from_recipe(
        'rafdb', 'x', epochs=20, model_kwargs=dict(mad_prob=0.5, img_size=64), evaluate=False, pretrained_tag=None,
        augment=False, classes=['a', 'b'], sched='cosine', warmup=1, channels_last=False)


@pytest.mark.parametrize('overrides, error, message', [
    (dict(dataset='raf-db'), ConfigError, "unknown dataset 'raf-db'; choose one of rafdb, "),
    (dict(dataset='rafdb', epochs=2, iterations=100), ConfigError, 'as epochs or as iterations, not both'),
    (dict(dataset='rafdb', sched='linear'), ConfigError, "sched is one of step, cosine, got 'linear'"),
    (dict(dataset='rafdb', learning_rate=0.1), TypeError, 'learning_rate'),
])
def test_bad_python_settings(overrides, error, message):
    with pytest.raises(error, match=message):
        TrainConfig.from_recipe(data_dir='x', **overrides)


def test_help_hides_the_test_only_flag(capsys):
    with pytest.raises(SystemExit):
        cli_main(['train', '--help'])
    help_text = capsys.readouterr().out
    assert '--checkpoint-every-steps' in help_text and '--stop-after-steps' not in help_text


@pytest.mark.parametrize('extra, message', [
    (('--batch-size', '9', '--grad-accum-steps', '2'), 'global batch: it must divide by processes x'),
    (('--batch-size', '64'), 'an epoch has 48 images, fewer than the global batch 64'),
    (('--sampler', 'uniform', '--batch-size', '48'), 'an epoch has 40 images, fewer than the global batch 48'),
    (('--model', 'no_such_model'), "unknown model 'no_such_model'"),
    (('--img-size', '30'), 'img_size must be a multiple of 8'),
    (('--resume',), 'nothing to resume'),
    (('--sched', 'cosine', '--milestones', '3'), 'drop them with --sched cosine'),
    (('--epochs', '2', '--warmup', '2'), '--warmup must be at least 0 and shorter than the run (2), got 2'),
    (('--smoothing', '1'), '--smoothing must be a number in [0, 1), got 1.0.'),
    (('--soft-labels',), "--soft-labels needs annotators' votes per image, which folder does not have"),
    (('--ema-decay', '1'), '--ema-decay must be a number in (0, 1) (or unset), got 1.0.'),
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
    weights = tmp_path / 'weights.pth'
    torch.save(load_model_state(output / 'last.pth'), weights)
    assert train_main(train_args(toy_data, output, *TINY_TRANSFER, '--epochs', '1', '--resume', str(weights))) == 2
    assert f'{weights} is not a checkpoint of timm-fer train; use --initial-checkpoint' in capsys.readouterr().err
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
