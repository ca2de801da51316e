"""Train a FER model with the paper's protocol: :func:`train` (``timm-fer train``).

One call per dataset; the recipe of TransFER (section 4.2) is the default (:meth:`TrainConfig.from_recipe`) and every
part of it is a field of the config. Class-balanced up-sampling, the paper's augmentation, SGD with a step schedule
(or cosine, with warm-up and label smoothing, for training from scratch), evaluation after every epoch, a JSON-lines
metrics file, and atomic checkpoints that ``resume`` continues exactly.

Several processes (GPUs or machines) run the same call through torchrun:
``torchrun --nproc-per-node N -m timm_fer.train ...``. The batch size is the global batch.
"""
import os
import random
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..errors import ConfigError
from ..utils.options import check_output_path
from .distributed import init_distributed
from .train_config import TrainConfig
from .trainer import BEST_CHECKPOINT, LAST_CHECKPOINT, METRICS_FILE, Trainer

__all__ = ['TrainResult', 'train']


@dataclass
class TrainResult:
    """Where a training run ended.

    Attributes:
        output: The run folder, with last.pth, best.pth and metrics.jsonl.
        finished: The run reached its last step (False when ``stop_after_steps`` stopped it).
        global_step: Optimiser steps done.
        best_metric: Best evaluation metric, None without evaluation.
    """
    output: str
    finished: bool
    global_step: int
    best_metric: Optional[float]


def train(
        config: TrainConfig,
        resume: Optional[str] = None,
        device: str = 'auto',
        log: Callable[[str], None] = print,
) -> TrainResult:
    """Train with ``config`` in this process, one of those torchrun started (or the only one).

    Args:
        config: The run's settings, e.g. ``TrainConfig.from_recipe('rafdb', '/data/RAF-DB/basic')``.
        resume: Continue a stopped run from this checkpoint ('': OUTPUT/last.pth); None starts a new run, in an
            output folder that holds none.
        device: 'auto' (CUDA if available, else CPU), 'cpu', 'cuda' (this process's local rank) or 'cuda:N'.
        log: Prints on the main process.

    Raises:
        ConfigError: settings out of range or that do not fit the processes or data, an output folder that cannot
            be written, nothing to resume, a run to overwrite, or a checkpoint of other settings or data.
        NonFiniteLossError: the loss became NaN or infinite; the run stops at that step, before the step's update,
            and the checkpoints on disk are those of the last good step they were written at.
    """
    env = init_distributed(device)
    log = log if env.is_main else (lambda *_: None)
    config = config.for_env(env)
    last = os.path.join(config.output, LAST_CHECKPOINT)
    resume_path = None
    if resume is not None:
        resume_path = resume or last
        if not os.path.isfile(resume_path):
            raise ConfigError(f'nothing to resume: {resume_path} does not exist (give --output of the run to resume, '
                              f'or --resume PATH).')
    elif os.path.exists(last):
        raise ConfigError(f'{config.output} already holds a run ({LAST_CHECKPOINT}): pass --resume to continue it, '
                          f'or choose another --output.')
    if env.is_main:
        check_output_path(config.output, '--output', folder=True)
    log(config.describe_recipe())
    trainer = Trainer(config, env, log)
    if env.is_main:
        os.makedirs(config.output, exist_ok=True)
    if resume_path:
        trainer.resume(resume_path)
    else:
        torch.manual_seed(config.seed + env.rank)
        random.seed(config.seed + env.rank)
    log(f'{trainer.steps_per_epoch} steps per epoch, {trainer.total_steps} steps in all, on {env.world_size} '
        f'process(es) ({env.device}).')
    finished = trainer.fit()
    if finished:
        if trainer.best_metric is not None:
            log(f'Best {config.metric} {100 * trainer.best_metric:.2f}%: '
                f'{os.path.join(config.output, BEST_CHECKPOINT)}.')
        log(f'Finished: {last}, metrics in {os.path.join(config.output, METRICS_FILE)}.')
    return TrainResult(config.output, finished, trainer.global_step, trainer.best_metric)
