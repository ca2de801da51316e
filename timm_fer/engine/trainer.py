"""The trainer of one run: data, model, optimiser, schedule, sampler position and exact checkpoints.

:meth:`Trainer.resume` continues a checkpoint from the same epoch, step, sampler position and random states, so the
final weights match an uninterrupted run.
"""
import json
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, Dataset
from tqdm import tqdm

from ..data import (
    ClassBalancedSampler,
    FaceBatchAugment,
    FerDataset,
    SampleKey,
    create_fer_dataset,
    create_fer_transform,
    mix_original_labels,
    normalize_faces,
    reweigh_votes,
)
from ..errors import ConfigError, NonFiniteLossError
from ..hub import TRAIN_CHECKPOINT_FORMAT, create_fer_model, resolve_fer_data_config
from ..hub.checkpoint import DATASET_FACE_TEMPLATES
from ..utils import autocast, prepare_model, resolve_amp_dtype, to_input, write_atomic
from .distributed import DistributedEnv, all_gather_objects, all_reduce_sum, broadcast_buffers
from .evaluate import evaluate_model, write_eval_report
from .metrics import ClassificationReport
from .optimizer import create_sgd
from .scheduler import create_lr_scheduler
from .train_config import TrainConfig
from .train_state import (
    capture_rng_state,
    config_differences,
    read_run_checkpoint,
    restore_rng_state,
    truncate_metrics,
)

__all__ = ['BEST_CHECKPOINT', 'LAST_CHECKPOINT', 'METRICS_FILE', 'Trainer']

METRICS_FILE = 'metrics.jsonl'
LAST_CHECKPOINT = 'last.pth'
BEST_CHECKPOINT = 'best.pth'

MicroBatch = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""uint8 faces, their dataset indices, and their augmentation seeds (the sampler's per-position seeds)."""


class _IndexedFaces(Dataset):
    """A dataset's uint8 faces with their indices and sample seeds, for a loader that feeds batch augmentation."""

    def __init__(self, dataset: FerDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey) -> Tuple[torch.Tensor, int, int]:
        index, seed = key
        return self.dataset[index][0], index, seed


class Trainer:
    """One training run: data, model, optimiser, schedule, sampler position and exact checkpoints.

    Args:
        config: The run's settings, for the processes that run it (:meth:`TrainConfig.for_env`).
        env: This process's rank, world size and device.
        log: Prints on the main process.

    Attributes:
        config: ``config`` with the dataset's classes.
        data_config: Preprocessing of the model, saved in checkpoints beside the config.
    """

    def __init__(self, config: TrainConfig, env: DistributedEnv, log: Callable[[str], None]) -> None:
        self.env = env
        self.log = log
        self.config = config
        self.train_set = self._checked(create_fer_dataset(
            config.dataset, config.data_dir, 'train', classes=config.classes, skip_missing=config.skip_missing_images,
            original_labels=config.original_labels))
        self.classes = self.train_set.classes
        self.config = config = replace(config, classes=list(self.classes))
        empty = [name for name, count in zip(self.classes, self.train_set.class_counts) if not count]
        if empty:
            log(f'Warning: classes {empty} have no training images; the balanced sampler leaves them out.')
        self.eval_set = None
        if config.evaluate:
            self.eval_set = self._checked(create_fer_dataset(
                config.dataset, config.data_dir, config.eval_split,
                classes=self.classes if config.dataset == 'folder' else None,
                skip_missing=config.skip_missing_images, original_labels=config.original_labels))

        self.model, init = create_fer_model(
            config.model, len(self.classes), config.img_size, config.model_kwargs,
            pretrained_tag=config.pretrained_tag, initial_checkpoint=config.initial_checkpoint,
            seed=config.seed, log=log)
        log(f'Model {config.model}: {sum(p.numel() for p in self.model.parameters()) / 1e6:.2f} M parameters, '
            f'starting from {init}.')
        self.data_config = resolve_fer_data_config(self.model, config.img_size)
        self.data_config['face_template'] = DATASET_FACE_TEMPLATES.get(  # how the dataset frames its faces
            config.dataset, self.data_config['face_template'])
        self.train_set.transform = create_fer_transform(self.data_config, to_uint8=True)
        self.augment = FaceBatchAugment(
            self.data_config['mean'], self.data_config['std'], rotation=config.rotation, crop_scale=config.crop_scale,
            hflip=config.hflip, erase_prob=config.erase_prob, zoom=config.zoom, photometric=config.photometric,
            degrade=config.degrade) if config.augment else None
        self.targets = torch.as_tensor(self.train_set.targets)
        self.soft_targets = self.train_set.soft_targets if config.soft_labels else None
        if config.soft_labels and self.soft_targets is None:
            raise ConfigError(f'--soft-labels needs annotators\' votes per image, which {config.dataset} does not '
                              f'have (FERPlus does); drop --soft-labels.')
        if config.neutral_vote_weight != 1:
            self.soft_targets = reweigh_votes(self.soft_targets, self.classes, 'neutral', config.neutral_vote_weight)
        if config.original_label_weight:
            votes = self.soft_targets if self.soft_targets is not None else \
                F.one_hot(self.targets, len(self.classes)).float()
            self.soft_targets = mix_original_labels(votes, torch.as_tensor(self.train_set.original_targets),
                                                    self.classes, config.original_label_weight)
        self.train_images = self._decode_all() if config.in_memory else None
        if self.eval_set is not None:
            self.eval_set.transform = create_fer_transform(self.data_config)
        self.model = prepare_model(self.model, env.device, config.channels_last)
        if config.sync_bn and env.distributed:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.amp_dtype = resolve_amp_dtype(config.amp, env.device)
        self.train_model = self.model
        if env.distributed:
            device_ids = [env.device.index] if env.device.type == 'cuda' else None
            self.train_model = DistributedDataParallel(self.model, device_ids=device_ids)
        if config.compile:
            self.train_model = torch.compile(self.train_model)
        self.ema = ModelEmaV3(self.model, decay=config.ema_decay) if config.ema_decay else None

        self.optimizer = create_sgd(self.model.parameters(), env.device, lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        self.sampler = ClassBalancedSampler(self.train_set.targets, env.world_size, env.rank, seed=config.seed,
                                            sample_seeds=True, balanced=config.sampler == 'balanced')
        self.accum_steps = config.grad_accum_steps
        self.micro_batch = config.batch_size // (env.world_size * self.accum_steps)
        self.steps_per_epoch = self.sampler.num_samples // (self.micro_batch * self.accum_steps)
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f'an epoch has {self.sampler.epoch_size} images, fewer than the global batch '
                f'{config.batch_size}: lower --batch-size.')
        steps_per_unit = self.steps_per_epoch if config.epochs is not None else 1
        self.total_steps = config.length * steps_per_unit
        self.scheduler = create_lr_scheduler(
            self.optimizer, config.sched, self.total_steps, [m * steps_per_unit for m in config.milestones],
            config.warmup * steps_per_unit)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best_metric: Optional[float] = None
        self.pending_record: Optional[Dict[str, Any]] = None
        self.epoch_sums = self._zero_sums()
        self.images_per_second = 0.
        self.epoch_seconds = 0.
        self.output = config.output

    def _checked(self, dataset: FerDataset) -> FerDataset:
        """Decode every image of ``dataset`` up front (a damaged file fails now, not after an epoch), and log it."""
        for path, reason in dataset.drop_unreadable_images(self.config.skip_bad_images, progress=self.env.is_main):
            self.log(f'Skipped unreadable image {path}: {reason}')
        self.log(dataset.summary())
        return dataset

    def _decode_all(self) -> torch.Tensor:
        """Every training face, decoded once into one uint8 (N, C, H, W) tensor."""
        faces = [self.train_set[index][0] for index in tqdm(
            range(len(self.train_set)), desc='decoding training faces', unit='image', leave=False,
            disable=not self.env.is_main)]
        images = torch.stack(faces)
        self.log(f'Training faces in memory: {tuple(images.shape)} uint8, {images.numel() / 2 ** 20:.0f} MiB.')
        return images

    def _zero_sums(self) -> torch.Tensor:
        """Loss sum, correct predictions and images of this process in the current epoch."""
        return torch.zeros(3, dtype=torch.float64, device=self.env.device)

    @property
    def served_model(self) -> torch.nn.Module:
        """The weights that checkpoints serve for inference: the EMA's when it runs, else the trained ones."""
        return self.ema.module if self.ema is not None else self.model

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
            'config': {**asdict(self.config), 'data_config': self.data_config},  # a plain dict: weights_only loads it
            'model': self.model.state_dict(),
            **({'model_ema': self.ema.module.state_dict()} if self.ema is not None else {}),
            'optimizer': self.optimizer.state_dict(),
            'scheduler': self.scheduler.state_dict(),
            'sampler': self.sampler.state_dict(num_consumed=self.samples_consumed),
            'train_class_counts': list(self.train_set.class_counts),
            'epoch': self.epoch,
            'step_in_epoch': self.step_in_epoch,
            'global_step': self.global_step,
            'best_metric': self.best_metric,
            'pending_record': self.pending_record,
            'rng_states': rng_states,
            'epoch_sums': epoch_sums,
        }
        for name in names:
            write_atomic(os.path.join(self.output, name), lambda path: torch.save(checkpoint, path))

    def resume(self, path: str) -> None:
        """Continue the run saved in ``path`` from its exact position.

        Raises:
            ConfigError: ``path`` is not a checkpoint of ``timm-fer train``, its run had other settings, or its
                training set had other images per class.
        """
        checkpoint = read_run_checkpoint(path)
        different = config_differences(checkpoint.run_config, self.config)
        if different:
            raise ConfigError(
                f'{path} was written by a run with other settings ({"; ".join(different)}); resume with the flags '
                f'(and number of processes) of that run.')
        state = checkpoint.training_state
        counts, saved_counts = list(self.train_set.class_counts), state.get('train_class_counts')
        changed = saved_counts is not None and saved_counts != counts  # earlier checkpoints did not record them
        if changed or state['sampler']['epoch_size'] != self.sampler.epoch_size:
            raise ConfigError(
                f'the training set changed since {path} was written (images per class then '
                f'{saved_counts or "not recorded"}, now {counts}); resume on the data the run started with, or start '
                f'a new run in another --output.')
        self.model.load_state_dict(state['model'])
        if self.ema is not None:
            self.ema.module.load_state_dict(state['model_ema'])
        self.optimizer.load_state_dict(state['optimizer'])
        if 'last_epoch' not in state['scheduler']:  # earlier versions saved torch's schedulers: skip
            self.scheduler.load_state_dict(state['scheduler'])
        self.sampler.load_state_dict(state['sampler'])
        self.epoch = state['epoch']
        self.step_in_epoch = state['step_in_epoch']
        self.global_step = state['global_step']
        self.best_metric = self._best_on_disk(state['best_metric'])
        self.pending_record = state.get('pending_record')
        self.scheduler.step_update(self.global_step)  # the lr of the next update, a function of the update count
        restore_rng_state(state['rng_states'][self.env.rank])
        self.epoch_sums = state['epoch_sums'][self.env.rank].to(self.env.device)
        if self.env.is_main:
            # an epoch checkpointed before its evaluation is evaluated again: its metrics line goes too
            truncate_metrics(os.path.join(self.output, METRICS_FILE),
                             self.global_step - (self.pending_record is not None), self.log)
        self.log(f'Resumed {path}: epoch {self.epoch + 1}, step {self.step_in_epoch} of {self.steps_per_epoch}, '
                 f'global step {self.global_step} of {self.total_steps}.')

    def _best_on_disk(self, recorded: Optional[float]) -> Optional[float]:
        """The best metric that best.pth really holds: a run killed between writing last.pth and best.pth (before
        best.pth was written first) recorded a best that is not on disk; training goes on from what is."""
        on_disk = None
        if self.env.is_main and recorded is not None:
            best = os.path.join(self.output, BEST_CHECKPOINT)
            on_disk = read_run_checkpoint(best).training_state['best_metric'] if os.path.isfile(best) else None
            if on_disk != recorded:
                self.log(f'{best} holds {"no checkpoint" if on_disk is None else f"the best {on_disk:.4f}"}, not the '
                         f'recorded best {recorded:.4f} (the run was stopped while writing it); going on from what is '
                         f'on disk.')
        return all_gather_objects(on_disk)[0]

    def fit(self) -> bool:
        """Train until the last step; False when ``stop_after_steps`` stopped it first (nothing saved then)."""
        if self.pending_record is not None:
            self._evaluate_epoch()
        while self.global_step < self.total_steps:
            if self.step_in_epoch == 0:
                self.sampler.set_epoch(self.epoch)
            if not self._train_epoch():
                return False
            self._end_epoch()
        return True

    def _micro_batches(self) -> Iterator[MicroBatch]:
        """The epoch's micro-batches of uint8 faces: sliced from memory, or decoded by loader workers."""
        batches = BatchSampler(self.sampler, self.micro_batch, drop_last=True)
        if self.train_images is not None:
            for keys in batches:
                indices, seeds = torch.tensor(keys).unbind(dim=1)
                yield self.train_images[indices], indices, seeds
            return
        loader = DataLoader(
            _IndexedFaces(self.train_set), batch_sampler=batches, num_workers=self.config.workers,
            pin_memory=self.env.device.type == 'cuda',
            generator=torch.Generator())  # its own generator: creating a loader leaves the global one untouched
        yield from loader

    def _inputs_and_targets(self, batch: MicroBatch) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Augmented inputs on the device, the loss's targets (votes with soft labels) and the majority labels."""
        images, indices, seeds = batch
        images = images.to(self.env.device, non_blocking=True)
        if self.augment is not None:
            images = self.augment(images, seeds)
        else:
            images = normalize_faces(images, self.data_config['mean'], self.data_config['std'])
        labels = self.targets[indices].to(self.env.device, non_blocking=True)
        targets = labels if self.soft_targets is None else self.soft_targets[indices].to(self.env.device)
        return to_input(images, self.env.device, self.config.channels_last), targets, labels

    def _train_epoch(self) -> bool:
        """Train the rest of the current epoch (its last steps when the run ends inside it)."""
        epoch_steps = min(self.steps_per_epoch, self.step_in_epoch + self.total_steps - self.global_step)
        self.model.train()
        micro_batches = self._micro_batches()
        progress = tqdm(total=epoch_steps, initial=self.step_in_epoch, desc=f'epoch {self.epoch + 1}', unit='step',
                        dynamic_ncols=True, leave=False, disable=not self.env.is_main)
        start_time, start_step = time.perf_counter(), self.step_in_epoch
        images_per_second = 0.
        stop_after = self.config.stop_after_steps
        every = self.config.checkpoint_every_steps
        while self.step_in_epoch < epoch_steps:
            try:
                self._train_step(micro_batches)
            except NonFiniteLossError:
                progress.close()  # the error's line starts a line of its own
                raise
            images_per_second = ((self.step_in_epoch - start_step) * self.config.batch_size
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

    def _train_step(self, micro_batches: Iterator[MicroBatch]) -> None:
        """One optimiser step over ``grad_accum_steps`` micro-batches.

        Raises:
            NonFiniteLossError: the loss of a micro-batch on any process is NaN or infinite; the step's update is not
                made and nothing is saved.
        """
        step_loss = torch.zeros((), dtype=torch.float64, device=self.env.device)
        for accumulation in range(self.accum_steps):
            images, targets, labels = self._inputs_and_targets(next(micro_batches))
            last = accumulation == self.accum_steps - 1
            sync = self.train_model.no_sync() if self.env.distributed and not last else nullcontext()
            with sync:
                with autocast(self.env.device, self.amp_dtype):
                    logits = self.train_model(images)
                loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.config.smoothing)
                (loss / self.accum_steps).backward()
            correct = (logits.argmax(dim=-1) == labels).sum().double()
            count = self.epoch_sums.new_tensor(labels.numel())
            self.epoch_sums += torch.stack([loss.detach().double() * count, correct, count])
            step_loss += loss.detach().double()
        if not torch.isfinite(all_reduce_sum(step_loss)).item():
            self._stop_non_finite(step_loss.item())
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)
        self.scheduler.step_update(self.global_step)
        self.step_in_epoch += 1

    def _stop_non_finite(self, loss: float) -> None:
        """Stop the run at the current step, whose loss is ``loss`` (NaN or infinite), saying what is kept."""
        last = os.path.join(self.output, LAST_CHECKPOINT)
        kept = (f'{last} keeps the last checkpoint, written before it' if os.path.isfile(last) else
                'no checkpoint had been written yet')
        raise NonFiniteLossError(
            f'the training loss is {loss} at step {self.global_step + 1} (epoch {self.epoch + 1}, step '
            f'{self.step_in_epoch + 1} of {self.steps_per_epoch}): training stopped before that step updated the '
            f'weights, and {kept}; lower --lr (now {self.config.lr}) or check the data.')

    def evaluate(self, model: Optional[torch.nn.Module] = None
                 ) -> Tuple[ClassificationReport, float, Optional[ClassificationReport]]:
        """Report and mean loss of ``model`` (default: the weights checkpoints serve, the EMA's when it runs) on the
        evaluation split, sharded over processes, and its report against the original labels when they are joined."""
        model = model if model is not None else self.served_model
        broadcast_buffers(model)
        confusion, loss_sum, original_confusion = evaluate_model(
            model, self.eval_set, self.env, self.micro_batch * self.accum_steps,
            amp_dtype=self.amp_dtype, channels_last=self.config.channels_last, workers=self.config.workers,
            progress=self.env.is_main)
        report = ClassificationReport.from_confusion(confusion, self.classes)
        intended = None if original_confusion is None else \
            ClassificationReport.from_confusion(original_confusion, self.classes)
        return report, loss_sum / report.num_images, intended

    def _end_epoch(self) -> None:
        """Close the epoch: checkpoint its weights before evaluating them (a failing evaluation loses no training:
        resuming evaluates the epoch again), then evaluate and record it."""
        loss_sum, correct, images = all_reduce_sum(self.epoch_sums.clone()).tolist()
        self.pending_record = {
            'epoch': self.epoch + 1,
            'step': self.global_step,
            'lr': self.optimizer.param_groups[0]['lr'],
            'train_loss': loss_sum / images,
            'train_accuracy': correct / images,
            'images_per_second': self.images_per_second,
            'epoch_seconds': self.epoch_seconds,
        }
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_sums = self._zero_sums()
        self.save((LAST_CHECKPOINT,))
        self._evaluate_epoch()

    def _evaluate_epoch(self) -> None:
        """Evaluate the epoch just ended, append its metrics line, write the final report after the last epoch, and
        checkpoint: best.pth before last.pth, so that last.pth never records a best that is not on disk."""
        record = dict(self.pending_record)
        report = None
        improved = False
        if self.eval_set is not None:
            report, eval_loss, intended = self.evaluate()
            record.update(eval_loss=eval_loss, eval_accuracy=report.accuracy,
                          eval_mean_class_accuracy=report.mean_class_accuracy)
            if intended is not None:
                record.update(eval_intended_accuracy=intended.accuracy,
                              eval_intended_mean_class_accuracy=intended.mean_class_accuracy,
                              eval_intended_called_neutral=intended.share_called('neutral'))
            if self.ema is not None:
                raw_report, _, _ = self.evaluate(self.model)
                record.update(raw_eval_accuracy=raw_report.accuracy,
                              raw_eval_mean_class_accuracy=raw_report.mean_class_accuracy)
            metric = record[f'eval_{self.config.metric}']
            improved = self.best_metric is None or metric > self.best_metric
            self.best_metric = metric if improved else self.best_metric
        self.log(', '.join(f'{key} {value:.4f}' if isinstance(value, float) else f'{key} {value}'
                           for key, value in record.items()))
        if self.env.is_main:
            with open(os.path.join(self.output, METRICS_FILE), 'a', encoding='utf-8') as f:
                f.write(json.dumps(record) + '\n')
        if report is not None and self.global_step == self.total_steps and self.env.is_main:
            what = f'{self.config.model} on {self.eval_set.display_name} {self.eval_set.split} after training'
            title = (f'{what}: accuracy {100 * report.accuracy:.2f}%, mean class accuracy '
                     f'{100 * report.mean_class_accuracy:.2f}%')
            extra = dict(checkpoint=os.path.abspath(os.path.join(self.output, LAST_CHECKPOINT)),
                         model=self.config.model, dataset=self.config.dataset, split=self.eval_set.split,
                         tta_flip=False, loss=record['eval_loss'], skipped=self.eval_set.skipped)
            write_eval_report(report, self.output, f'eval-{self.config.dataset}-{self.eval_set.split}', title,
                              extra)
        self.pending_record = None
        self.save((BEST_CHECKPOINT, LAST_CHECKPOINT) if improved else (LAST_CHECKPOINT,))
