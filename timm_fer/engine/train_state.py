"""What ``resume`` needs to continue a run exactly: random states, the run checkpoint, its config and metrics."""
import json
import os
import random
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Union

import torch

from ..data import create_fer_dataset, mix_original_labels
from ..errors import CheckpointMismatchError, ConfigError, FerError
from ..hub import Checkpoint, read_checkpoint
from ..utils import write_text_atomic
from .train_config import TrainConfig

__all__ = ['capture_rng_state', 'config_differences', 'read_run_checkpoint', 'restore_rng_state',
           'training_class_prior', 'truncate_metrics']


def capture_rng_state() -> Dict[str, Any]:
    """States of the torch (CPU and CUDA) and Python random generators of this process."""
    state = {'torch': torch.get_rng_state(), 'python': random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Restore the generators saved by ``capture_rng_state``."""
    torch.set_rng_state(state['torch'])
    random.setstate(state['python'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def read_run_checkpoint(path: str) -> Checkpoint:
    """Read a checkpoint of ``timm-fer train`` to resume it, with its ``run_config`` and ``training_state``.

    Raises:
        ConfigError: the file cannot be read, or is not a checkpoint of ``timm-fer train``.
    """
    try:
        checkpoint = read_checkpoint(path)
    except CheckpointMismatchError:  # entries that are neither weights nor a run's: no run checkpoint either
        checkpoint = None
    except FerError as e:
        raise ConfigError(f'cannot read checkpoint {path} to resume ({type(e).__name__}: {e}).') from e
    if checkpoint is None or checkpoint.run_config is None:
        raise ConfigError(f'{path} is not a checkpoint of timm-fer train; use --initial-checkpoint for weights.')
    return checkpoint


def training_class_prior(checkpoint: Union[str, Path]) -> List[float]:
    """Share of each class among the training images of the run that wrote ``checkpoint`` (read from its dataset);
    for a run that mixed in the original labels, each class's share of its majority-and-original targets.

    Raises:
        ConfigError: ``checkpoint`` is not a checkpoint of ``timm-fer train`` (it names no dataset).
        DatasetFileNotFoundError: the run's dataset is no longer at its ``data_dir``.
    """
    config = read_checkpoint(checkpoint).run_config
    if config is None:
        raise ConfigError(f'{checkpoint} is not a checkpoint of timm-fer train, so it names no training set to take '
                          f'the class prior from; use a run checkpoint (last.pth or best.pth).')
    weight = config.get('original_label_weight', 0.)
    train_set = create_fer_dataset(config['dataset'], config['data_dir'], 'train', classes=config.get('classes')
                                   if config['dataset'] == 'folder' else None,
                                   skip_missing=config.get('skip_missing_images', False),
                                   original_labels=config.get('original_labels') if weight else None)
    if weight:  # the run's targets mixed the original labels in: the prior is their mean
        labels = torch.nn.functional.one_hot(torch.as_tensor(train_set.targets), len(train_set.classes)).float()
        mixed = mix_original_labels(labels, torch.as_tensor(train_set.original_targets), train_set.classes, weight)
        return mixed.mean(dim=0).tolist()
    counts = train_set.class_counts
    return [count / sum(counts) for count in counts]


def config_differences(saved: Dict[str, Any], config: TrainConfig) -> List[str]:
    """The resume fields of ``config`` that differ from the ``saved`` config of a checkpoint, as 'name old -> new'.

    A field missing from ``saved`` (added after the checkpoint was written) takes its default, which is what earlier
    versions did.
    """
    different = []
    for f in fields(config):
        if not f.metadata.get('resume'):
            continue
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        old = saved.get(f.name, None if default is MISSING else default)
        new = getattr(config, f.name)
        if _comparable(old) != _comparable(new):
            different.append(f'{f.name} {old!r} -> {new!r}')
    return different


def truncate_metrics(path: str, global_step: int, log: Callable[[str], None] = print) -> None:
    """Drop metrics lines written after ``global_step``, which a resumed run writes again.

    A last line that is not a whole JSON record (cut by a kill or a full disk) is dropped, and ``log`` says so.

    Raises:
        ConfigError: a line before the last is not a JSON record of an epoch.
    """
    if not os.path.isfile(path):
        return
    with open(path, encoding='utf-8', errors='replace') as f:
        lines = [line for line in f if line.strip()]
    kept = []
    for number, line in enumerate(lines, start=1):
        try:
            step = json.loads(line)['step']
        except (ValueError, KeyError, TypeError) as e:
            if number < len(lines):
                raise ConfigError(f'{path} line {number} is not a metrics record ({type(e).__name__}); fix or remove '
                                  f'that line, then resume.') from e
            log(f'{path}: dropped its last line, which was cut while being written ({line.strip()[:40]!r}...).')
            continue
        if step <= global_step:
            kept.append(line if line.endswith('\n') else line + '\n')
    write_text_atomic(path, ''.join(kept))


def _comparable(value: Any) -> Any:
    """``value`` with tuples as lists, to compare configs that went through different containers."""
    if isinstance(value, (list, tuple)):
        return [_comparable(item) for item in value]
    if isinstance(value, dict):
        return {key: _comparable(item) for key, item in value.items()}
    return value
