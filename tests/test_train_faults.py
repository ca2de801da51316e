"""Training loses nothing to a fault: damaged images are found before the first step, an evaluation that fails
keeps the epoch's checkpoint, and best.pth and last.pth always agree on disk."""
import json
import os
from pathlib import Path

import pytest
import torch
from helpers import TINY_TRANSFER, train_args, write_toy_folder

from timm_fer.cli.train import main as train_main
from timm_fer.engine import trainer as trainer_module

pytestmark = pytest.mark.usefixtures('one_torch_thread', 'offline_hub')

COMMON = [*TINY_TRANSFER, '--epochs', '3', '--lr', '0.01']


@pytest.fixture(scope='module')
def toy_data(tmp_path_factory) -> Path:
    return write_toy_folder(tmp_path_factory.mktemp('toy'), train_per_class=8, val_per_class=4)


def metrics_of(output: Path) -> list:
    lines = [json.loads(line) for line in (output / 'metrics.jsonl').read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in ('images_per_second', 'epoch_seconds')} for line in lines]


def state_of(path: Path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=True)


def test_a_damaged_validation_image_fails_before_training_or_is_skipped(toy_data, tmp_path, capsys):
    data = tmp_path / 'data'
    data.mkdir()
    os.symlink(toy_data / 'train', data / 'train', target_is_directory=True)
    for name in ('blue', 'green', 'red'):
        (data / 'val' / name).mkdir(parents=True)
        for image in (toy_data / 'val' / name).iterdir():
            (data / 'val' / name / image.name).write_bytes(image.read_bytes())
    damaged = data / 'val' / 'green' / '0.png'
    damaged.write_bytes(damaged.read_bytes()[:60])
    assert train_main(train_args(data, tmp_path / 'run', *COMMON)) == 2
    error = capsys.readouterr().err
    assert f'1 of the 10 Image folder val images cannot be read, the first is {damaged}' in error
    assert '--skip-bad-images' in error and not (tmp_path / 'run' / 'metrics.jsonl').exists()
    assert train_main(train_args(data, tmp_path / 'skip', *COMMON, '--skip-bad-images')) == 0
    out = capsys.readouterr().out
    assert f'Skipped unreadable image {damaged}:' in out and 'skipped 1 unreadable images' in out
    assert len(metrics_of(tmp_path / 'skip')) == 3


def test_a_failed_evaluation_keeps_the_epoch_and_resume_evaluates_it(toy_data, tmp_path, monkeypatch):
    assert train_main(train_args(toy_data, tmp_path / 'whole', *COMMON)) == 0
    calls = {'n': 0}
    evaluate = trainer_module.Trainer.evaluate

    def fails_in_epoch_2(self):
        calls['n'] += 1
        if calls['n'] == 2:
            raise RuntimeError('evaluation crashed')
        return evaluate(self)
    monkeypatch.setattr(trainer_module.Trainer, 'evaluate', fails_in_epoch_2)
    with pytest.raises(RuntimeError, match='evaluation crashed'):
        train_main(train_args(toy_data, tmp_path / 'run', *COMMON))
    saved = state_of(tmp_path / 'run' / 'last.pth')
    assert (saved['epoch'], saved['step_in_epoch']) == (2, 0) and saved['pending_record']['epoch'] == 2
    assert len(metrics_of(tmp_path / 'run')) == 1
    monkeypatch.setattr(trainer_module.Trainer, 'evaluate', evaluate)
    assert train_main(train_args(toy_data, tmp_path / 'run', *COMMON, '--resume')) == 0
    assert metrics_of(tmp_path / 'run') == metrics_of(tmp_path / 'whole')
    whole, resumed = state_of(tmp_path / 'whole' / 'last.pth'), state_of(tmp_path / 'run' / 'last.pth')
    assert all(torch.equal(whole['model'][k], resumed['model'][k]) for k in whole['model'])
    assert resumed['pending_record'] is None
    assert (tmp_path / 'run' / 'eval-folder-val.json').is_file()


def test_best_is_written_before_last(toy_data, tmp_path, monkeypatch):
    written = []
    write_atomic = trainer_module.write_atomic

    def recording(path, write):
        written.append(os.path.basename(path))
        write_atomic(path, write)
    monkeypatch.setattr(trainer_module, 'write_atomic', recording)
    assert train_main(train_args(toy_data, tmp_path / 'run', *COMMON, '--epochs', '1')) == 0
    assert written == ['last.pth', 'best.pth', 'last.pth']  # before evaluation; then best first, last after it


def test_resume_repairs_a_best_that_is_not_on_disk(toy_data, tmp_path, capsys):
    run = tmp_path / 'run'
    assert train_main(train_args(toy_data, run, *COMMON, '--checkpoint-every-steps', '1',
                                 '--stop-after-steps', '6')) == 0
    recorded = state_of(run / 'last.pth')['best_metric']
    assert recorded is not None
    (run / 'best.pth').unlink()  # killed between last.pth and best.pth by an earlier version
    capsys.readouterr()
    assert train_main(train_args(toy_data, run, *COMMON, '--resume')) == 0
    out = capsys.readouterr().out
    assert f'holds no checkpoint, not the recorded best {recorded:.4f}' in out
    best = state_of(run / 'best.pth')
    assert best['best_metric'] == state_of(run / 'last.pth')['best_metric']
    best_line = max(metrics_of(run)[1:], key=lambda line: line['eval_accuracy'])
    assert best['best_metric'] == best_line['eval_accuracy']
