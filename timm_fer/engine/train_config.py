"""Settings of a training run: :class:`TrainConfig`, built from the dataset's recipe, and its recipe text."""
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, List, Optional, Tuple

from ..constants import EVAL_SPLITS, PAPER_INIT_TAG, SAMPLER_DESCRIPTIONS, TRAIN_CHOICES
from ..errors import ConfigError
from ..hub import check_pretrained_tag
from ..utils.options import Range, check_fields
from .distributed import DistributedEnv
from .recipes import RECIPES, Recipe

__all__ = ['RESUME_FIELDS', 'TrainConfig']

RESUME = {'resume': True}
"""Field metadata of the settings that a resumed run must share with the run it continues."""


def _ranged(values: Range, resume: bool = True) -> Dict[str, Any]:
    """Field metadata of a numeric setting: the ``range`` of its values, and whether it is a resume setting."""
    return {'range': values, **(RESUME if resume else {})}


PROBABILITY = Range(0, 1)
COUNT = Range(1, integer=True)


@dataclass(kw_only=True)
class TrainConfig:
    """The settings of one training run; :meth:`from_recipe` builds it from the dataset's recipe.

    Fields with ``range`` metadata (a :class:`~timm_fer.utils.options.Range`) are checked on creation, so a value
    out of range is one :class:`~timm_fer.errors.ConfigError` naming the flag, the value and the range.
    Fields with ``resume`` metadata (:data:`RESUME_FIELDS`) must be equal in a run that continues a checkpoint. A
    field added after checkpoints were written defaults to what earlier versions did, and a resumed checkpoint that
    lacks it is read with that default.

    Attributes:
        dataset: Dataset layout and recipe: rafdb, ferplus, affectnet7, affectnet8 or folder.
        data_dir: Dataset folder.
        evaluate: Evaluate after every epoch.
        eval_split: Split evaluated (None: the dataset's, e.g. rafdb test).
        classes: Class folders in label order for the folder dataset (None: sorted); set to the dataset's classes
            when training starts.
        skip_missing_images: FERPlus: skip images that have votes but no file, instead of failing.
        skip_bad_images: Leave out images that cannot be decoded (all are checked before training), instead of failing.
        model: timm model name.
        model_kwargs: Model constructor arguments.
        img_size: Square input size (None: ``model_kwargs['img_size']``, else the model's).
        pretrained_tag: Start from MODEL.TAG when timm can load it; None: random initialisation.
        initial_checkpoint: Start from the weights of this file instead.
        epochs: Training length in epochs; exactly one of ``epochs`` and ``iterations`` is set.
        iterations: Training length in optimiser steps.
        sched: Learning-rate schedule: 'step' (x0.1 at ``milestones``, the paper's) or 'cosine' (to 0 at the end).
        milestones: Epochs (iterations with ``iterations``) where the step schedule multiplies lr by 0.1.
        warmup: Epochs (iterations with ``iterations``) of linear warm-up to ``lr``.
        smoothing: Label smoothing of the cross-entropy.
        soft_labels: Train on each image's vote distribution (FERPlus' "probability" labels), not its majority label.
        neutral_vote_weight: With ``soft_labels``, weigh the votes for the class named neutral by this before the
            distribution is normalised: below 1, a face that some annotators call neutral and others an expression
            leans to the expression (a face every annotator calls neutral keeps its label).
        original_labels: FERPlus: FER2013's original labels file (``fer2013_original_labels.csv``), joined to the
            faces by row: the intended expression of each face, mixed into the training target by
            ``original_label_weight`` and scored as a second metric ("intended") at every evaluation.
        original_label_weight: Share of the original label in each face's target (0..1), the rest its votes (or
            majority label); contempt, which FER2013 lacks, keeps its share of the votes (:func:`mix_original_labels`).
        ema_decay: Keep an exponential moving average of the weights with this decay (timm's ``ModelEmaV3``);
            evaluation, best.pth and the weights a checkpoint serves are the average's. None: no average.
        lr: Peak learning rate of SGD.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        batch_size: Global batch size, split over processes x ``grad_accum_steps`` micro-batches.
        grad_accum_steps: Micro-batches per optimiser step.
        sampler: 'balanced' (every class up-sampled to the largest, the paper's) or 'uniform' (every image once).
        world_size: Processes that train (None until training starts, which sets torchrun's number).
        metric: Evaluation metric that selects best.pth: 'accuracy' or 'mean_class_accuracy'.
        augment: Augment training images (else resized faces only).
        rotation: Largest random rotation, degrees.
        crop_scale: Enlarge the face this many times before the random crop.
        hflip: Horizontal flip probability.
        erase_prob: Random erasing probability.
        zoom: Range of the random framing scale (:class:`~timm_fer.data.FaceBatchAugment`); (1, 1) keeps the size.
        photometric: Probability of per-face contrast, brightness and gamma jitter.
        degrade: Probability of each of blur, down-up sampling and noise.
        amp: Autocast precision: 'auto', 'bf16' or 'none'.
        channels_last: Run convolutions in channels-last memory format.
        compile: ``torch.compile`` the model.
        sync_bn: Synchronise BatchNorm statistics across processes (CUDA only).
        seed: Seed of initialisation, sampling and augmentation.
        workers: Data loader processes per process (None: up to 8, from the CPUs, set when training starts).
        in_memory: Decode every training face once into one uint8 tensor and slice batches from it (no loader
            workers); the batches, and so the run, are the same as without it.
        output: Run folder (None: runs/DATASET-MODEL).
        checkpoint_every_steps: Also checkpoint every N optimiser steps inside epochs.
        stop_after_steps: Stop after global step N without saving, as if killed (to test resuming).
    """
    dataset: str = field(metadata=RESUME)
    data_dir: str
    evaluate: bool = True
    eval_split: Optional[str] = None
    classes: Optional[List[str]] = field(default=None, metadata=RESUME)
    skip_missing_images: bool = False
    skip_bad_images: bool = False
    model: str = field(default='transfer_fer_ir50', metadata=RESUME)
    model_kwargs: Dict[str, Any] = field(default_factory=dict, metadata=RESUME)
    img_size: Optional[int] = field(default=None, metadata=_ranged(Range(16, 2048, integer=True, optional=True)))
    pretrained_tag: Optional[str] = PAPER_INIT_TAG
    initial_checkpoint: Optional[str] = None
    epochs: Optional[int] = field(default=None, metadata=_ranged(Range(1, integer=True, optional=True)))
    iterations: Optional[int] = field(default=None, metadata=_ranged(Range(1, integer=True, optional=True)))
    sched: str = field(default='step', metadata=RESUME)
    milestones: Tuple[int, ...] = field(default=(), metadata=RESUME)
    warmup: int = field(default=0, metadata=_ranged(Range(0, integer=True)))
    smoothing: float = field(default=0., metadata=_ranged(Range(0, 1, high_open=True)))
    soft_labels: bool = field(default=False, metadata=RESUME)
    neutral_vote_weight: float = field(default=1., metadata=_ranged(PROBABILITY))
    original_labels: Optional[str] = None
    original_label_weight: float = field(default=0., metadata=_ranged(PROBABILITY))
    ema_decay: Optional[float] = field(
        default=None, metadata=_ranged(Range(0, 1, low_open=True, high_open=True, optional=True)))
    lr: float = field(metadata=_ranged(Range(0)))  # 0: the loss is measured, the weights stay
    momentum: float = field(metadata=_ranged(Range(0, 1, high_open=True)))
    weight_decay: float = field(metadata=_ranged(Range(0)))
    batch_size: int = field(metadata=_ranged(COUNT))
    grad_accum_steps: int = field(default=1, metadata=_ranged(COUNT))
    sampler: str = field(default='balanced', metadata=RESUME)
    world_size: Optional[int] = field(default=None, metadata=_ranged(Range(1, integer=True, optional=True)))
    metric: str = 'accuracy'
    augment: bool = field(default=True, metadata=RESUME)
    rotation: float = field(default=10., metadata=_ranged(Range(0, 180)))
    crop_scale: float = field(default=1.1, metadata=_ranged(Range(1, 4)))
    hflip: float = field(default=0.5, metadata=_ranged(PROBABILITY))
    erase_prob: float = field(default=0.25, metadata=_ranged(PROBABILITY))
    zoom: Tuple[float, float] = field(default=(1., 1.), metadata=RESUME)
    photometric: float = field(default=0., metadata=_ranged(PROBABILITY))
    degrade: float = field(default=0., metadata=_ranged(PROBABILITY))
    amp: str = field(default='auto', metadata=RESUME)
    channels_last: bool = field(default=True, metadata=RESUME)
    compile: bool = field(default=False, metadata=RESUME)
    sync_bn: bool = field(default=False, metadata=RESUME)
    seed: int = field(default=42, metadata=_ranged(Range(0, 2 ** 32 - 1, integer=True)))
    workers: Optional[int] = field(default=None, metadata=_ranged(Range(0, integer=True, optional=True), False))
    in_memory: bool = False
    output: Optional[str] = None
    checkpoint_every_steps: Optional[int] = field(
        default=None, metadata=_ranged(Range(1, integer=True, optional=True), False))
    stop_after_steps: Optional[int] = field(
        default=None, metadata=_ranged(Range(1, integer=True, optional=True), False))

    def __post_init__(self) -> None:
        """Fill in the defaults that follow from other fields, and check that the settings work together."""
        _recipe(self.dataset)
        for name, choices in TRAIN_CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(f'{name} is one of {", ".join(choices)}, got {getattr(self, name)!r}.')
        check_fields(self)
        check_pretrained_tag(self.model, self.pretrained_tag)
        if (self.epochs is None) == (self.iterations is None):
            raise ConfigError(f'give the length as epochs or as iterations, not both or neither (epochs '
                              f'{self.epochs}, iterations {self.iterations}).')
        self.milestones = tuple(self.milestones)
        if self.sched == 'cosine' and self.milestones:
            raise ConfigError('--milestones set the step schedule; drop them with --sched cosine.')
        for milestone in self.milestones:
            Range(1, self.length, high_open=True, integer=True, flag='each of --milestones').check('', milestone)
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ConfigError(f'--milestones must increase, got {list(self.milestones)}.')
        if self.warmup >= self.length:
            raise ConfigError(
                f'--warmup must be at least 0 and shorter than the run ({self.length}), got {self.warmup}.')
        if self.neutral_vote_weight != 1 and not self.soft_labels:
            raise ConfigError('--neutral-vote-weight reweighs annotators\' votes: add --soft-labels, or drop it.')
        if self.original_label_weight and self.original_labels is None:
            raise ConfigError('--original-label-weight mixes in FER2013\'s original labels: add --original-labels '
                              'PATH (fer2013_original_labels.csv), or drop it.')
        if self.metric.startswith('intended') and self.original_labels is None:
            raise ConfigError(f'--metric {self.metric} scores FER2013\'s original labels: add --original-labels PATH.')
        if self.original_labels is not None and self.dataset != 'ferplus':
            raise ConfigError("--original-labels are FER2013's own labels of the FERPlus images: for --dataset "
                              'ferplus only.')
        zoom = Range(0, low_open=True, flag='each of --zoom')
        for value in self.zoom:
            zoom.check('', value)
        self.zoom = tuple(float(z) for z in self.zoom)
        if len(self.zoom) != 2 or not self.zoom[0] <= self.zoom[1]:
            raise ConfigError(f'--zoom is a range LOW HIGH with 0 < LOW <= HIGH (e.g. 0.8 1.25), got {self.zoom}.')
        processes = self.world_size or 1
        if self.batch_size % (processes * self.grad_accum_steps):
            raise ConfigError(
                f'--batch-size {self.batch_size} is the global batch: it must divide by processes x '
                f'--grad-accum-steps = {processes} x {self.grad_accum_steps}.')
        self.eval_split = self.eval_split or EVAL_SPLITS[self.dataset]
        if self.classes is not None:
            self.classes = list(self.classes)
        if self.img_size is None:
            self.img_size = self.model_kwargs.get('img_size')
        self.output = self.output or os.path.join('runs', f'{self.dataset}-{self.model}')

    @classmethod
    def from_recipe(cls, dataset: str, data_dir: str, **overrides: Any) -> 'TrainConfig':
        """The recipe of ``dataset`` (TransFER, section 4.2), with ``overrides`` of any of its fields.

        The recipe sets the model, length, milestones, lr, momentum, weight decay, batch size and metric (an
        override of None keeps the recipe's). Its milestones are scaled to another length, and left out with the
        cosine schedule.

        Raises:
            ConfigError: unknown dataset, or settings that do not work together.
            TypeError: an override that is not a field.
        """
        recipe = _recipe(dataset)
        settings = dict(overrides)
        if settings.get('epochs') is None and settings.get('iterations') is None:
            settings.update(epochs=recipe.epochs, iterations=recipe.iterations)
        for name in ('model', 'lr', 'momentum', 'weight_decay', 'batch_size', 'metric'):
            if settings.get(name) is None:
                settings[name] = getattr(recipe, name)
        settings['model_kwargs'] = dict(settings.get('model_kwargs') or {})
        if settings.get('milestones') is None:
            settings.pop('milestones', None)
            length = settings.get('epochs') if settings.get('epochs') is not None else settings.get('iterations')
            # a length that is no positive integer gets no milestones: the config's checks refuse it
            if settings.get('sched', cls.sched) == 'step' and isinstance(length, int) and length > 0:
                recipe_length = recipe.epochs if recipe.epochs is not None else recipe.iterations
                scaled = (round(milestone * length / recipe_length) for milestone in recipe.milestones)
                settings['milestones'] = tuple(sorted({milestone for milestone in scaled if 0 < milestone < length}))
        return cls(dataset=dataset, data_dir=data_dir, **settings)

    @property
    def length(self) -> int:
        """Training length, in epochs or iterations."""
        return self.epochs if self.epochs is not None else self.iterations

    def for_env(self, env: DistributedEnv) -> 'TrainConfig':
        """This config with the world size and data loader workers of the processes that run it, checked for them.

        Raises:
            ConfigError: the batch does not split over the processes, the config is for another number of
                processes, or ``sync_bn`` is asked without CUDA.
        """
        if self.world_size is not None and self.world_size != env.world_size:
            raise ConfigError(f'the config is for {self.world_size} processes, but {env.world_size} run it.')
        if self.sync_bn and env.distributed and env.device.type != 'cuda':
            raise ConfigError("--sync-bn needs CUDA (torch's SyncBatchNorm syncs GPU tensors only); drop it on CPU.")
        workers = self.workers if self.workers is not None else min(8, max(1, (os.cpu_count() or 1) // env.world_size))
        return replace(self, world_size=env.world_size, workers=workers)

    def describe_recipe(self) -> str:
        """The settings a run starts with, as printed at its start."""
        unit = 'epochs' if self.epochs is not None else 'iterations'
        processes = self.world_size or 1
        per_process = self.batch_size // (processes * self.grad_accum_steps)
        augment = (f'rotation +-{self.rotation} deg, crop from x{self.crop_scale}, flip {self.hflip}, '
                   f'random erasing {self.erase_prob}') if self.augment else 'none'
        if self.augment and self.zoom != (1., 1.):
            augment += f', zoom {self.zoom[0]:g}-{self.zoom[1]:g}'
        if self.augment and self.photometric:
            augment += f', photometric {self.photometric:g}'
        if self.augment and self.degrade:
            augment += f', blur / down-up / noise {self.degrade:g} each'
        if self.sched == 'cosine':
            schedule = f'SGD lr {self.lr} cosine to 0'
        else:
            schedule = f'SGD lr {self.lr} x0.1 at {unit} {list(self.milestones)}'
        if self.warmup:
            schedule += f' after {self.warmup} {unit} of linear warm-up'
        loss = f'label smoothing {self.smoothing}' if self.smoothing else 'no label smoothing'
        loss = f'{"vote distributions" if self.soft_labels else "majority labels"}, {loss}'
        if self.neutral_vote_weight != 1:
            loss += f', neutral votes x{self.neutral_vote_weight:g}'
        if self.original_label_weight:
            loss += f', mixed with the original labels x{self.original_label_weight:g}'
        averaging = f', weight EMA {self.ema_decay}' if self.ema_decay else ''
        return '\n'.join([
            f'Recipe for {self.dataset} (every value can be changed by a flag):',
            f'  schedule     {self.length} {unit}, {schedule}, momentum {self.momentum}, weight decay '
            f'{self.weight_decay}, cross-entropy on {loss}{averaging}',
            f'  batch        {self.batch_size} global = {per_process} per process x {processes} processes x '
            f'{self.grad_accum_steps} accumulation steps, {SAMPLER_DESCRIPTIONS[self.sampler]}',
            f'  model        {self.model} {self.model_kwargs}',
            f'  augmentation {augment}',
            f'  evaluation   {self.eval_split if self.evaluate else "off"}, best checkpoint by {self.metric}'
            f'{", intended expressions scored too" if self.original_labels else ""}',
            f'  run          amp {self.amp}, channels-last {self.channels_last}, compile {self.compile}, '
            f'faces in memory {self.in_memory}, seed {self.seed}, output {self.output}',
        ])


RESUME_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.metadata.get('resume'))
"""Fields that a resumed run must share with the run it continues."""


def _recipe(dataset: str) -> Recipe:
    """The recipe of ``dataset``; an unknown dataset is a ConfigError."""
    if dataset not in RECIPES:
        raise ConfigError(f"unknown dataset '{dataset}'; choose one of {', '.join(RECIPES)}.")
    return RECIPES[dataset]
