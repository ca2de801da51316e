"""Train a FER model with the paper's protocol: :func:`train` (``timm-fer train``).

One command per dataset; the recipe of TransFER (section 4.2) is the default and every part of it is a flag.
Class-balanced up-sampling, the paper's augmentation, SGD with a step schedule (or cosine, with warm-up and label
smoothing, for training from scratch), evaluation after every epoch, a JSON-lines metrics file, and atomic
checkpoints that ``--resume`` continues exactly (same epoch, step, sampler position and random states, so the final
weights match an uninterrupted run).

Several processes (GPUs or machines) run the same command through torchrun:
``torchrun --nproc-per-node N -m timm_fer.train ...``. The batch size is the global batch.
"""
import argparse
import json
import math
import os
import random
import time
from contextlib import nullcontext
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, MultiStepLR
from torch.utils.data import BatchSampler, DataLoader
from tqdm import tqdm

from ..data import EVAL_SPLITS, ClassBalancedSampler, create_fer_dataset, create_fer_transform
from ..errors import ConfigError
from ..hub import TRAIN_CHECKPOINT_FORMAT, create_fer_model, resolve_fer_data_config
from ..utils import autocast, prepare_model, resolve_amp_dtype, to_input, write_atomic, write_text_atomic
from .distributed import (
    DistributedEnv,
    all_gather_objects,
    all_reduce_sum,
    broadcast_buffers,
    init_distributed,
)
from .evaluate import evaluate_model, write_eval_report
from .metrics import ClassificationReport
from .recipes import RECIPES
from .train_state import capture_rng_state, restore_rng_state

__all__ = ['Trainer', 'create_lr_scheduler', 'resolve_config', 'train']

METRICS_FILE = 'metrics.jsonl'
LAST_CHECKPOINT = 'last.pth'
BEST_CHECKPOINT = 'best.pth'

RESUME_KEYS = ('dataset', 'classes', 'model', 'model_kwargs', 'img_size', 'epochs', 'iterations', 'milestones',
               'lr', 'momentum', 'weight_decay', 'batch_size', 'grad_accum_steps', 'world_size', 'seed', 'augment',
               'rotation', 'crop_scale', 'hflip', 'erase_prob', 'amp', 'channels_last', 'compile', 'sync_bn', 'sampler',
               'sched', 'warmup', 'smoothing')
"""Config entries that a resumed run must share with the run it continues."""

RESUME_DEFAULTS = {'sched': 'step', 'warmup': 0, 'smoothing': 0.}
"""Values of entries added after checkpoints of earlier versions were written, which those runs used."""

SAMPLER_DESCRIPTIONS = {'balanced': 'class-balanced up-sampling', 'uniform': 'every image once per epoch'}
"""Epoch samplers of ``--sampler``."""


def resolve_config(args: argparse.Namespace, env: DistributedEnv) -> Dict[str, Any]:
    """The run's settings: the dataset's recipe, overridden by the flags given, with their consistency checked."""
    world_size = env.world_size
    recipe = RECIPES[args.dataset]
    if args.epochs is None and args.iterations is None:
        epochs, iterations = recipe.epochs, recipe.iterations
    else:
        epochs, iterations = args.epochs, args.iterations
    length = epochs if epochs is not None else iterations
    if length <= 0:
        raise ConfigError(f'--epochs / --iterations must be positive, got {length}.')
    if args.sched == 'cosine':
        if args.milestones is not None:
            raise ConfigError('--milestones set the step schedule; drop them with --sched cosine.')
        milestones: Tuple[int, ...] = ()
    elif args.milestones is not None:
        milestones = tuple(args.milestones)
    else:
        recipe_length = recipe.epochs if recipe.epochs is not None else recipe.iterations
        scaled = (round(milestone * length / recipe_length) for milestone in recipe.milestones)
        milestones = tuple(sorted({milestone for milestone in scaled if 0 < milestone < length}))
    if not 0 <= args.warmup < length:
        raise ConfigError(f'--warmup must be at least 0 and shorter than the run ({length}), got {args.warmup}.')
    if not 0 <= args.smoothing < 1:
        raise ConfigError(f'--smoothing is a probability mass in [0, 1), got {args.smoothing}.')
    batch_size = args.batch_size if args.batch_size is not None else recipe.batch_size
    if args.grad_accum_steps < 1 or batch_size % (world_size * args.grad_accum_steps):
        raise ConfigError(
            f'--batch-size {batch_size} is the global batch: it must divide by processes x --grad-accum-steps = '
            f'{world_size} x {args.grad_accum_steps}.')
    model_kwargs = dict(recipe.model_kwargs) if args.model.startswith('transfer_fer') else {}
    model_kwargs.update(args.model_kwargs or {})
    if args.sync_bn and env.distributed and env.device.type != 'cuda':
        raise ConfigError("--sync-bn needs CUDA (torch's SyncBatchNorm syncs GPU tensors only); drop it on CPU.")
    return dict(
        dataset=args.dataset,
        data_dir=args.data_dir,
        eval_split=None if args.no_eval else (args.eval_split or EVAL_SPLITS[args.dataset]),
        classes=args.classes.split(',') if args.classes else None,
        skip_missing_images=args.skip_missing_images,
        model=args.model,
        model_kwargs=model_kwargs,
        img_size=args.img_size if args.img_size is not None else model_kwargs.get('img_size'),
        pretrained_tag=None if args.no_pretrained else args.pretrained_tag,
        initial_checkpoint=args.initial_checkpoint,
        epochs=epochs,
        iterations=iterations,
        sched=args.sched,
        milestones=milestones,
        warmup=args.warmup,
        smoothing=args.smoothing,
        lr=args.lr if args.lr is not None else recipe.lr,
        momentum=args.momentum if args.momentum is not None else recipe.momentum,
        weight_decay=args.weight_decay if args.weight_decay is not None else recipe.weight_decay,
        batch_size=batch_size,
        grad_accum_steps=args.grad_accum_steps,
        sampler=args.sampler,
        world_size=world_size,
        metric=args.metric or recipe.metric,
        augment=not args.no_augment,
        rotation=args.rotation,
        crop_scale=args.crop_scale,
        hflip=args.hflip,
        erase_prob=args.erase_prob,
        amp=args.amp,
        channels_last=args.channels_last,
        compile=args.compile,
        sync_bn=args.sync_bn,
        seed=args.seed,
        workers=args.workers if args.workers is not None else min(8, max(1, (os.cpu_count() or 1) // world_size)),
        output=args.output or os.path.join('runs', f'{args.dataset}-{args.model}'),
        checkpoint_every_steps=args.checkpoint_every_steps,
        stop_after_steps=args.stop_after_steps,
    )


def describe_recipe(config: Dict[str, Any]) -> str:
    """The settings a run starts with, as printed at its start."""
    length = f'{config["epochs"]} epochs' if config['epochs'] is not None else f'{config["iterations"]} iterations'
    unit = 'epochs' if config['epochs'] is not None else 'iterations'
    per_process = config['batch_size'] // (config['world_size'] * config['grad_accum_steps'])
    augment = (f'rotation +-{config["rotation"]} deg, crop from x{config["crop_scale"]}, flip {config["hflip"]}, '
               f'random erasing {config["erase_prob"]}') if config['augment'] else 'none'
    if config['sched'] == 'cosine':
        schedule = f'SGD lr {config["lr"]} cosine to 0'
    else:
        schedule = f'SGD lr {config["lr"]} x0.1 at {unit} {list(config["milestones"])}'
    if config['warmup']:
        schedule += f' after {config["warmup"]} {unit} of linear warm-up'
    loss = f'label smoothing {config["smoothing"]}' if config['smoothing'] else 'no label smoothing'
    return '\n'.join([
        f'Recipe for {config["dataset"]} (every value can be changed by a flag):',
        f'  schedule     {length}, {schedule}, momentum {config["momentum"]}, weight decay {config["weight_decay"]}, '
        f'cross-entropy with {loss}',
        f'  batch        {config["batch_size"]} global = {per_process} per process x {config["world_size"]} '
        f'processes x {config["grad_accum_steps"]} accumulation steps, '
        f'{SAMPLER_DESCRIPTIONS[config["sampler"]]}',
        f'  model        {config["model"]} {config["model_kwargs"]}',
        f'  augmentation {augment}',
        f'  evaluation   {config["eval_split"] or "off"}, best checkpoint by {config["metric"]}',
        f'  run          amp {config["amp"]}, channels-last {config["channels_last"]}, compile {config["compile"]}, '
        f'seed {config["seed"]}, output {config["output"]}',
    ])


class Trainer:
    """One training run: data, model, optimiser, schedule, sampler position and exact checkpoints.

    Args:
        config: Settings from ``resolve_config``.
        env: This process's rank, world size and device.
        log: Prints on the main process.
    """

    def __init__(self, config: Dict[str, Any], env: DistributedEnv, log: Callable[[str], None]) -> None:
        self.config = config
        self.env = env
        self.log = log
        self.train_set = create_fer_dataset(config['dataset'], config['data_dir'], 'train', classes=config['classes'],
                                            skip_missing=config['skip_missing_images'])
        log(self.train_set.summary())
        self.classes = self.train_set.classes
        config['classes'] = list(self.classes)
        empty = [name for name, count in zip(self.classes, self.train_set.class_counts) if not count]
        if empty:
            log(f'Warning: classes {empty} have no training images; the balanced sampler leaves them out.')
        self.eval_set = None
        if config['eval_split']:
            self.eval_set = create_fer_dataset(
                config['dataset'], config['data_dir'], config['eval_split'],
                classes=self.classes if config['dataset'] == 'folder' else None,
                skip_missing=config['skip_missing_images'])
            log(self.eval_set.summary())

        self.model, init = create_fer_model(
            config['model'], len(self.classes), config['img_size'], config['model_kwargs'],
            pretrained_tag=config['pretrained_tag'], initial_checkpoint=config['initial_checkpoint'],
            seed=config['seed'], log=log)
        log(f'Model {config["model"]}: {sum(p.numel() for p in self.model.parameters()) / 1e6:.2f} M parameters, '
            f'starting from {init}.')
        data_config = resolve_fer_data_config(self.model, config['img_size'])
        config['data_config'] = data_config
        self.train_set.transform = create_fer_transform(
            data_config, is_training=config['augment'], rotation=config['rotation'], crop_scale=config['crop_scale'],
            hflip=config['hflip'], erase_prob=config['erase_prob'])
        if self.eval_set is not None:
            self.eval_set.transform = create_fer_transform(data_config)
        self.model = prepare_model(self.model, env.device, config['channels_last'])
        if config['sync_bn'] and env.distributed:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.amp_dtype = resolve_amp_dtype(config['amp'], env.device)
        self.train_model = self.model
        if env.distributed:
            device_ids = [env.device.index] if env.device.type == 'cuda' else None
            self.train_model = DistributedDataParallel(self.model, device_ids=device_ids)
        if config['compile']:
            self.train_model = torch.compile(self.train_model)

        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config['lr'], momentum=config['momentum'],
                                         weight_decay=config['weight_decay'])
        self.sampler = ClassBalancedSampler(self.train_set.targets, env.world_size, env.rank, seed=config['seed'],
                                            sample_seeds=True, balanced=config['sampler'] == 'balanced')
        self.accum_steps = config['grad_accum_steps']
        self.micro_batch = config['batch_size'] // (env.world_size * self.accum_steps)
        self.steps_per_epoch = self.sampler.num_samples // (self.micro_batch * self.accum_steps)
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f'an epoch has {self.sampler.epoch_size} images, fewer than the global batch '
                f'{config["batch_size"]}: lower --batch-size.')
        steps_per_unit = self.steps_per_epoch if config['epochs'] is not None else 1
        self.total_steps = (config['epochs'] if config['epochs'] is not None else config['iterations']) * steps_per_unit
        self.scheduler = create_lr_scheduler(
            self.optimizer, config['sched'], self.total_steps, [m * steps_per_unit for m in config['milestones']],
            config['warmup'] * steps_per_unit)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_metric: Optional[float] = None
        self.epoch_sums = self._zero_sums()
        self.images_per_second = 0.
        self.epoch_seconds = 0.
        self.output = config['output']

    def _zero_sums(self) -> torch.Tensor:
        """Loss sum, correct predictions and images of this process in the current epoch."""
        return torch.zeros(3, dtype=torch.float64, device=self.env.device)

    @property
    def samples_consumed(self) -> int:
        """Samples of the current epoch that this process has trained on."""
        return self.step_in_epoch * self.micro_batch * self.accum_steps

    def save(self, names: Tuple[str, ...]) -> None:
        """Write a checkpoint of the exact training state under each of ``names`` in the output folder (atomically).

        Every process must call it: the random states and epoch sums of all processes are gathered to rank 0.
        """
        rng_states = all_gather_objects(capture_rng_state())
        epoch_sums = all_gather_objects(self.epoch_sums.cpu())
        if not self.env.is_main:
            return
        checkpoint = {
            'format': TRAIN_CHECKPOINT_FORMAT,
            'config': self.config,
            'model': self.model.state_dict(),
            'optimizer': self.optimizer.state_dict(),
            'scheduler': self.scheduler.state_dict(),
            'sampler': self.sampler.state_dict(num_consumed=self.samples_consumed),
            'epoch': self.epoch,
            'step_in_epoch': self.step_in_epoch,
            'global_step': self.global_step,
            'best_metric': self.best_metric,
            'rng_states': rng_states,
            'epoch_sums': epoch_sums,
        }
        for name in names:
            write_atomic(os.path.join(self.output, name), lambda path: torch.save(checkpoint, path))

    def resume(self, path: str) -> None:
        """Continue the run saved in ``path`` from its exact position."""
        try:
            checkpoint = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as e:
            raise ConfigError(f'cannot read checkpoint {path} to resume ({type(e).__name__}: {e}).') from e
        if not isinstance(checkpoint, dict) or checkpoint.get('format') != TRAIN_CHECKPOINT_FORMAT:
            raise ConfigError(f'{path} is not a checkpoint of timm-fer train; use --initial-checkpoint for weights.')
        saved = {**RESUME_DEFAULTS, **checkpoint['config']}
        different = [f'{key} {saved.get(key)!r} -> {self.config[key]!r}' for key in RESUME_KEYS
                     if _comparable(saved.get(key)) != _comparable(self.config[key])]
        if different:
            raise ConfigError(
                f'{path} was written by a run with other settings ({"; ".join(different)}); resume with the flags '
                f'(and number of processes) of that run.')
        self.model.load_state_dict(checkpoint['model'])
        self.optimizer.load_state_dict(checkpoint['optimizer'])
        self.scheduler.load_state_dict(checkpoint['scheduler'])
        self.sampler.load_state_dict(checkpoint['sampler'])
        self.epoch = checkpoint['epoch']
        self.step_in_epoch = checkpoint['step_in_epoch']
        self.global_step = checkpoint['global_step']
        self.best_metric = checkpoint['best_metric']
        restore_rng_state(checkpoint['rng_states'][self.env.rank])
        self.epoch_sums = checkpoint['epoch_sums'][self.env.rank].to(self.env.device)
        if self.env.is_main:
            _truncate_metrics(os.path.join(self.output, METRICS_FILE), self.global_step)
        self.log(f'Resumed {path}: epoch {self.epoch + 1}, step {self.step_in_epoch} of {self.steps_per_epoch}, '
                 f'global step {self.global_step} of {self.total_steps}.')

    def fit(self) -> bool:
        """Train until the last step; False when ``stop_after_steps`` stopped it first (nothing saved then)."""
        while self.global_step < self.total_steps:
            if self.step_in_epoch == 0:
                self.sampler.set_epoch(self.epoch)
            if not self._train_epoch():
                return False
            self._end_epoch()
        return True

    def _micro_batches(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        loader = DataLoader(
            self.train_set, batch_sampler=BatchSampler(self.sampler, self.micro_batch, drop_last=True),
            num_workers=self.config['workers'], pin_memory=self.env.device.type == 'cuda',
            generator=torch.Generator())  # its own generator: creating a loader leaves the global one untouched
        for images, targets in loader:
            yield to_input(images, self.env.device, self.config['channels_last']), \
                targets.to(self.env.device, non_blocking=True)

    def _train_epoch(self) -> bool:
        """Train the rest of the current epoch (its last steps when the run ends inside it)."""
        epoch_steps = min(self.steps_per_epoch, self.step_in_epoch + self.total_steps - self.global_step)
        self.model.train()
        micro_batches = self._micro_batches()
        progress = tqdm(total=epoch_steps, initial=self.step_in_epoch, desc=f'epoch {self.epoch + 1}', unit='step',
                        dynamic_ncols=True, leave=False, disable=not self.env.is_main)
        start_time, start_step = time.perf_counter(), self.step_in_epoch
        images_per_second = 0.
        stop_after = self.config['stop_after_steps']
        every = self.config['checkpoint_every_steps']
        while self.step_in_epoch < epoch_steps:
            self._train_step(micro_batches)
            images_per_second = ((self.step_in_epoch - start_step) * self.config['batch_size']
                                 / (time.perf_counter() - start_time))
            if not progress.disable:
                loss_sum, correct, images = self.epoch_sums.tolist()
                progress.set_postfix(loss=f'{loss_sum / images:.4f}', acc=f'{correct / images:.3f}',
                                     img_s=f'{images_per_second:.0f}', refresh=False)
                progress.update()
            if stop_after is not None and self.global_step >= stop_after:
                progress.close()
                self.log(f'Stopped after step {self.global_step} (--stop-after-steps) without saving.')
                return False
            if every and self.global_step % every == 0 and self.step_in_epoch < epoch_steps:
                self.save((LAST_CHECKPOINT,))
        progress.close()
        self.epoch_seconds = time.perf_counter() - start_time
        self.images_per_second = images_per_second
        return True

    def _train_step(self, micro_batches: Iterator[Tuple[torch.Tensor, torch.Tensor]]) -> None:
        """One optimiser step over ``grad_accum_steps`` micro-batches."""
        for accumulation in range(self.accum_steps):
            images, targets = next(micro_batches)
            last = accumulation == self.accum_steps - 1
            sync = self.train_model.no_sync() if self.env.distributed and not last else nullcontext()
            with sync:
                with autocast(self.env.device, self.amp_dtype):
                    logits = self.train_model(images)
                loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.config['smoothing'])
                (loss / self.accum_steps).backward()
            correct = (logits.argmax(dim=-1) == targets).sum().double()
            count = self.epoch_sums.new_tensor(targets.numel())
            self.epoch_sums += torch.stack([loss.detach().double() * count, correct, count])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.global_step += 1
        self.step_in_epoch += 1

    def evaluate(self) -> Tuple[ClassificationReport, float]:
        """Report and mean loss of the current weights on the evaluation split, sharded over processes."""
        broadcast_buffers(self.model)
        confusion, loss_sum = evaluate_model(
            self.model, self.eval_set, self.env, self.micro_batch * self.accum_steps,
            amp_dtype=self.amp_dtype, channels_last=self.config['channels_last'], workers=self.config['workers'],
            progress=self.env.is_main)
        report = ClassificationReport.from_confusion(confusion, self.classes)
        return report, loss_sum / report.num_images

    def _end_epoch(self) -> None:
        """Evaluate, append the epoch's metrics line, then checkpoint (last, and best when it improved)."""
        loss_sum, correct, images = all_reduce_sum(self.epoch_sums.clone()).tolist()
        record = {
            'epoch': self.epoch + 1,
            'step': self.global_step,
            'lr': self.optimizer.param_groups[0]['lr'],
            'train_loss': loss_sum / images,
            'train_accuracy': correct / images,
            'images_per_second': self.images_per_second,
            'epoch_seconds': self.epoch_seconds,
        }
        report = None
        improved = False
        if self.eval_set is not None:
            report, eval_loss = self.evaluate()
            record.update(eval_loss=eval_loss, eval_accuracy=report.accuracy,
                          eval_mean_class_accuracy=report.mean_class_accuracy)
            metric = record[f'eval_{self.config["metric"]}']
            improved = self.best_metric is None or metric > self.best_metric
            self.best_metric = metric if improved else self.best_metric
        self.log(', '.join(f'{key} {value:.4f}' if isinstance(value, float) else f'{key} {value}'
                           for key, value in record.items()))
        if self.env.is_main:
            with open(os.path.join(self.output, METRICS_FILE), 'a', encoding='utf-8') as f:
                f.write(json.dumps(record) + '\n')
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_sums = self._zero_sums()
        self.save((LAST_CHECKPOINT, BEST_CHECKPOINT) if improved else (LAST_CHECKPOINT,))
        if report is not None and self.global_step == self.total_steps and self.env.is_main:
            what = f'{self.config["model"]} on {self.eval_set.display_name} {self.eval_set.split} after training'
            title = (f'{what}: accuracy {100 * report.accuracy:.2f}%, mean class accuracy '
                     f'{100 * report.mean_class_accuracy:.2f}%')
            extra = dict(checkpoint=os.path.abspath(os.path.join(self.output, LAST_CHECKPOINT)),
                         model=self.config['model'], dataset=self.config['dataset'], split=self.eval_set.split,
                         tta_flip=False, loss=record['eval_loss'], skipped=self.eval_set.skipped)
            write_eval_report(report, self.output, f'eval-{self.config["dataset"]}-{self.eval_set.split}', title,
                              extra)


def create_lr_scheduler(
        optimizer: torch.optim.Optimizer,
        sched: str,
        total_steps: int,
        milestone_steps: List[int],
        warmup_steps: int = 0,
) -> LRScheduler:
    """The learning-rate schedule, stepped once per optimiser step.

    Args:
        optimizer: Optimiser whose initial lr is the peak.
        sched: 'step' (x0.1 at each milestone, the paper's) or 'cosine' (half a cosine from the peak to 0 at the end).
        total_steps: Optimiser steps of the whole run.
        milestone_steps: Steps where the step schedule multiplies lr by 0.1.
        warmup_steps: Steps of linear warm-up to the peak before either schedule.
    """
    if sched == 'step' and not warmup_steps:
        return MultiStepLR(optimizer, milestone_steps, gamma=0.1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if sched == 'cosine':
            return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / (total_steps - warmup_steps)))
        return 0.1 ** sum(step >= milestone for milestone in milestone_steps)

    return LambdaLR(optimizer, factor)


def _comparable(value: Any) -> Any:
    """``value`` with tuples as lists, to compare configs that went through different containers."""
    if isinstance(value, (list, tuple)):
        return [_comparable(item) for item in value]
    if isinstance(value, dict):
        return {key: _comparable(item) for key, item in value.items()}
    return value


def _truncate_metrics(path: str, global_step: int) -> None:
    """Drop metrics lines written after ``global_step``, which a resumed run writes again."""
    if not os.path.isfile(path):
        return
    with open(path, encoding='utf-8') as f:
        lines = [line for line in f if line.strip() and json.loads(line)['step'] <= global_step]
    write_text_atomic(path, ''.join(lines))


def train(args: argparse.Namespace) -> int:
    """Run ``timm-fer train``."""
    env = init_distributed(args.device)
    log = print if env.is_main else (lambda *_: None)
    config = resolve_config(args, env)
    resume_path = None
    if args.resume is not None:
        resume_path = args.resume or os.path.join(config['output'], LAST_CHECKPOINT)
        if not os.path.isfile(resume_path):
            raise ConfigError(f'nothing to resume: {resume_path} does not exist (give --output of the run to resume, '
                              f'or --resume PATH).')
    elif os.path.exists(os.path.join(config['output'], LAST_CHECKPOINT)):
        raise ConfigError(f'{config["output"]} already holds a run ({LAST_CHECKPOINT}): pass --resume to continue it, '
                          f'or choose another --output.')
    log(describe_recipe(config))
    trainer = Trainer(config, env, log)
    if env.is_main:
        os.makedirs(config['output'], exist_ok=True)
    if resume_path:
        trainer.resume(resume_path)
    else:
        torch.manual_seed(config['seed'] + env.rank)
        random.seed(config['seed'] + env.rank)
    log(f'{trainer.steps_per_epoch} steps per epoch, {trainer.total_steps} steps in all, on {env.world_size} '
        f'process(es) ({env.device}).')
    if not trainer.fit():
        return 0
    if trainer.best_metric is not None:
        log(f'Best {config["metric"]} {100 * trainer.best_metric:.2f}%: '
            f'{os.path.join(config["output"], BEST_CHECKPOINT)}.')
    log(f'Finished: {os.path.join(config["output"], LAST_CHECKPOINT)}, metrics in '
        f'{os.path.join(config["output"], METRICS_FILE)}.')
    return 0
