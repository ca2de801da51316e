"""Evaluate a FER checkpoint: :func:`evaluate_checkpoint` (``timm-fer eval``) and :func:`evaluate_model`.

Prints overall accuracy, mean class accuracy and per-class accuracy, and writes them as JSON with a confusion
matrix PNG. Loads checkpoints of ``timm-fer train`` (model, classes and input size come with them), plain state
dicts and ``.safetensors`` files. Runs under ``torchrun`` too: each process evaluates a shard.
"""
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from ..data import DATASET_NAMES, EVAL_SPLITS, FerDataset, create_fer_dataset, create_fer_transform
from ..errors import ConfigError, NonFiniteOutputError
from ..hub import load_model, read_checkpoint, resolve_fer_data_config
from ..hub.loading import check_finite_outputs
from ..utils import autocast, prepare_model, resolve_amp_dtype, to_input, write_text_atomic
from ..utils.options import Range, check_output_path, option_ranges
from ..utils.outputs import OutputPlan
from .distributed import DistributedEnv, all_reduce_sum, init_distributed
from .metrics import ClassificationReport, confusion_matrix
from .plot import draw_confusion_matrix

__all__ = ['Evaluation', 'EvaluationResult', 'describe_intended', 'describe_report', 'evaluate_checkpoint',
           'evaluate_model', 'intended_dict', 'write_eval_report']


class Evaluation(NamedTuple):
    """What :func:`evaluate_model` counts over a dataset, summed over all processes."""
    confusion: torch.Tensor
    """(classes, classes) counts against the dataset's labels; row = true class, column = predicted class."""
    loss_sum: float
    """Summed cross-entropy against the dataset's labels."""
    original_confusion: Optional[torch.Tensor]
    """The same counts against the dataset's second labels (FERPlus: FER2013's original, intended expressions), over
    the images that have one; None for a dataset without them."""


class _WithOriginalTargets(Dataset):
    """A dataset's (image, label) samples with each image's second label."""

    def __init__(self, dataset: FerDataset) -> None:
        self.dataset = dataset
        self.original_targets = torch.as_tensor(dataset.original_targets)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[Any, int, torch.Tensor]:
        image, target = self.dataset[index]
        return image, target, self.original_targets[index]


def _counts(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Confusion counts of the images whose target is a class (>= 0); the others (-1) are left out, without a sync."""
    flat = torch.where(targets >= 0, targets.long() * num_classes + predictions.long(), num_classes ** 2)
    return torch.bincount(flat, minlength=num_classes ** 2 + 1)[:num_classes ** 2].reshape(num_classes, num_classes)


@torch.inference_mode()
def evaluate_model(
        model: torch.nn.Module,
        dataset: FerDataset,
        env: DistributedEnv,
        batch_size: int,
        amp_dtype: Optional[torch.dtype] = None,
        channels_last: bool = False,
        tta_flip: bool = False,
        workers: int = 0,
        progress: bool = False,
        source: str = 'the model',
) -> Evaluation:
    """Confusion matrix and summed cross-entropy of ``model`` over ``dataset``, summed over all processes, and the
    confusion matrix against the dataset's second labels where it has them (``original_targets``).

    Each process takes every ``world_size``-th image from its rank on, so the shards cover the dataset once.

    Args:
        model: Model to evaluate (put in eval mode here).
        dataset: Dataset with its test transform.
        env: This process's rank, world size and device.
        batch_size: Images per forward pass on this process.
        amp_dtype: Autocast dtype (bfloat16), or None for fp32.
        channels_last: Feed the images in channels-last memory format.
        tta_flip: Average the softmax of each image with that of its horizontal flip.
        workers: Data loader worker processes.
        progress: Show a progress bar.
        source: Where the weights came from (``checkpoint PATH``), for the error below.

    Raises:
        NonFiniteOutputError: an image got a NaN or infinite logit (counted per batch on the device, checked once at
            the end), so the accuracy and loss would mean nothing.
    """
    model.eval()
    num_classes = len(dataset.classes)
    with_original = getattr(dataset, 'original_targets', None) is not None
    shard = Subset(_WithOriginalTargets(dataset) if with_original else dataset,
                   range(env.rank, len(dataset), env.world_size))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=workers, pin_memory=env.device.type == 'cuda',
                        generator=torch.Generator())  # its own generator: the global one stays untouched
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=env.device)
    original_confusion = torch.zeros_like(confusion) if with_original else None
    loss_sum = torch.zeros((), dtype=torch.float64, device=env.device)
    nonfinite = torch.zeros((), dtype=torch.long, device=env.device)
    for batch in tqdm(loader, desc='eval', unit='batch', leave=False, disable=not progress):
        images, targets = batch[:2]
        targets = targets.to(env.device, non_blocking=True)
        if tta_flip:
            images = torch.cat([images, images.flip(-1)])
        images = to_input(images, env.device, channels_last)
        with autocast(env.device, amp_dtype):
            logits = model(images)
        nonfinite += (~torch.isfinite(logits).all(dim=-1)).view(-1, len(targets)).any(dim=0).sum()
        log_probs = logits.float().log_softmax(dim=-1)
        if tta_flip:
            log_probs = torch.logsumexp(torch.stack(log_probs.chunk(2)), dim=0) - math.log(2)
        loss_sum += F.nll_loss(log_probs, targets, reduction='sum').double()
        predictions = log_probs.argmax(dim=-1)
        confusion += confusion_matrix(targets, predictions, num_classes)
        if original_confusion is not None:
            original_confusion += _counts(batch[2].to(env.device, non_blocking=True), predictions, num_classes)
    all_reduce_sum(confusion)
    all_reduce_sum(loss_sum)
    all_reduce_sum(nonfinite)
    if nonfinite.item():
        raise NonFiniteOutputError(
            f'{source} gives NaN or infinite logits for {nonfinite.item()} of {len(dataset)} images: its weights '
            f'overflow in the forward pass (or are damaged), so no accuracy or loss is reported; use the checkpoint '
            f'of a run whose loss stayed finite, or --amp none.')
    if original_confusion is not None:
        all_reduce_sum(original_confusion)
        original_confusion = original_confusion.cpu()
    return Evaluation(confusion.cpu(), loss_sum.item(), original_confusion)


def write_eval_report(
        report: ClassificationReport, output_dir: str, name: str, title: str, extra: Dict[str, Any]) -> List[str]:
    """Write ``<name>.json`` (metrics, confusion matrix and ``extra``) and ``<name>.png`` (confusion matrix).

    Returns the written paths.
    """
    json_path = os.path.join(output_dir, f'{name}.json')
    png_path = os.path.join(output_dir, f'{name}.png')
    write_text_atomic(json_path, json.dumps({**extra, **report.to_dict()}, indent=2) + '\n')
    draw_confusion_matrix(report.confusion, report.classes, png_path, title)
    return [json_path, png_path]


def describe_report(report: ClassificationReport, what: str) -> str:
    """One line: what was evaluated, accuracy, mean class accuracy and the number of images."""
    return (f'{what}: accuracy {100 * report.accuracy:.2f}%, mean class accuracy '
            f'{100 * report.mean_class_accuracy:.2f}% ({report.num_images} images)')


def describe_intended(report: ClassificationReport) -> str:
    """One line of the scores against FER2013's original labels: accuracy, mean class recall, each class's recall
    and how often a face whose intended expression is not neutral is called neutral."""
    recalls = ', '.join(f'{name} {100 * recall:.1f}' for name, recall in zip(report.classes, report.per_class_accuracy)
                        if recall is not None)
    called_neutral = f', expressive faces called neutral {100 * report.share_called("neutral"):.1f}%' \
        if 'neutral' in report.classes else ''
    return (f'intended expression (original labels): accuracy {100 * report.accuracy:.2f}%, mean class recall '
            f'{100 * report.mean_class_accuracy:.2f}% ({recalls}){called_neutral} ({report.num_images} images)')


def intended_dict(report: ClassificationReport) -> Dict[str, Any]:
    """JSON-ready scores against the original labels: the report's, and the share of expressive faces called
    neutral."""
    return {**report.to_dict(), 'expressive_called_neutral': report.share_called('neutral')}


@dataclass
class EvaluationResult:
    """What :func:`evaluate_checkpoint` measured, and the files it wrote (on the main process only)."""
    report: ClassificationReport
    summary: str
    written: List[str] = field(default_factory=list)
    intended: Optional[ClassificationReport] = None
    """Scores against FER2013's original labels, when ``original_labels`` were given."""


@option_ranges(batch_size=Range(1, integer=True), workers=Range(0, integer=True),
               img_size=Range(16, 2048, integer=True, optional=True))
def evaluate_checkpoint(
        checkpoint: str,
        data_dir: str,
        dataset: Optional[str] = None,
        split: Optional[str] = None,
        classes: Optional[Sequence[str]] = None,
        skip_missing_images: bool = False,
        original_labels: Optional[str] = None,
        model: Optional[str] = None,
        model_kwargs: Optional[Dict[str, Any]] = None,
        img_size: Optional[int] = None,
        batch_size: int = 256,
        tta_flip: bool = False,
        amp: str = 'auto',
        channels_last: bool = True,
        compile_model: bool = False,
        device: str = 'auto',
        workers: int = 0,
        output: Optional[str] = None,
        overwrite: bool = False,
        log: Callable[[str], None] = print,
) -> EvaluationResult:
    """Evaluate a checkpoint on a dataset split; write ``eval-DATASET-SPLIT.json`` and ``.png`` in ``output``.

    Model, constructor arguments, input size, dataset and classes default to those a ``timm-fer train`` checkpoint
    carries. Under ``torchrun`` each process evaluates a shard and the main process writes the results.

    Args:
        checkpoint: Any checkpoint :func:`~timm_fer.hub.read_checkpoint` reads.
        data_dir: Dataset folder.
        dataset: Dataset layout (default: the checkpoint's).
        split: Split to evaluate (default: the one each dataset reports).
        classes: Class folders in label order, for the 'folder' layout (default: the checkpoint's).
        skip_missing_images: FERPlus: skip images that have votes but no file.
        original_labels: FERPlus: FER2013's original labels (``fer2013_original_labels.csv``): also score the
            intended expressions (:func:`describe_intended`), beside the FERPlus majority.
        model: Model name (default: the checkpoint's, else ``transfer_fer_ir50``).
        model_kwargs: Constructor arguments over the checkpoint's.
        img_size: Square input size (default: the checkpoint's).
        batch_size: Images per forward pass and process.
        tta_flip: Average the softmax of each face with that of its horizontal flip.
        amp: 'auto', 'bf16' or 'none'.
        channels_last: Run in channels-last memory format.
        compile_model: ``torch.compile`` the model.
        device: 'auto', 'cpu', 'cuda' or 'cuda:N'.
        workers: Data loader worker processes.
        output: Folder of the JSON and PNG results (default: the current folder, never the checkpoint's: that may be
            a training run or the installed package).
        overwrite: Replace results already there (with the same dataset, split and flip); without it, they stop the
            evaluation before it starts. The checkpoint and the data are never written.
        log: Prints on the main process.

    Raises:
        ConfigError: an option out of range, an output folder that cannot be written (checked before the work), or
            a checkpoint that does not fit the data.
    """
    env = init_distributed(device)
    log = log if env.is_main else (lambda *_: None)
    output_dir = output or os.curdir
    if env.is_main:
        check_output_path(output_dir, '--output', folder=True)
    saved = read_checkpoint(checkpoint)
    run = saved.run_config or {}
    dataset_name = dataset or run.get('dataset')
    if dataset_name is None:
        raise ConfigError(f'{checkpoint} does not say its dataset: pass --dataset ({", ".join(DATASET_NAMES)}).')
    kwargs = dict(model_kwargs or {})
    if img_size is not None:
        kwargs['img_size'] = img_size
    split = split or EVAL_SPLITS[dataset_name]
    name = f'eval-{dataset_name}-{split}' + ('-flip' if tta_flip else '')
    if env.is_main:
        plan = OutputPlan([checkpoint, data_dir, original_labels], overwrite=overwrite)
        for suffix in ('.json', '.png'):
            plan.file(os.path.join(output_dir, name + suffix), '--output', 'choose another --output folder')
    if classes is None and dataset_name == 'folder':
        classes = saved.labels
    data = create_fer_dataset(dataset_name, data_dir, split, classes=classes, skip_missing=skip_missing_images,
                              original_labels=original_labels)
    log(data.summary())
    if saved.labels is not None and tuple(saved.labels) != data.classes:
        raise ConfigError(
            f'{checkpoint} was trained on classes {list(saved.labels)}, but {dataset_name} {split} has '
            f'{list(data.classes)}; evaluate on data with the same classes in the same order (--classes).')
    fer_model, _ = load_model(model, saved, num_classes=len(data.classes), model_kwargs=kwargs,
                              default_model='transfer_fer_ir50')
    model_name = model or saved.model_name or fer_model.pretrained_cfg['architecture']
    data_config = resolve_fer_data_config(fer_model, kwargs.get('img_size'))
    data.transform = create_fer_transform(data_config)
    check_finite_outputs(fer_model, data_config['input_size'], f'checkpoint {checkpoint}')
    fer_model = prepare_model(fer_model, env.device, channels_last, compile_model)
    confusion, loss_sum, original_confusion = evaluate_model(
        fer_model, data, env, batch_size, amp_dtype=resolve_amp_dtype(amp, env.device), channels_last=channels_last,
        tta_flip=tta_flip, workers=workers, progress=env.is_main, source=f'checkpoint {checkpoint}')
    report = ClassificationReport.from_confusion(confusion, data.classes)
    what = f'{model_name} on {data.display_name} {split}' + (' with flip TTA' if tta_flip else '')
    result = EvaluationResult(report, describe_report(report, what))
    if original_confusion is not None:
        result.intended = ClassificationReport.from_confusion(original_confusion, data.classes)
        result.summary += '\n' + describe_intended(result.intended)
    if env.is_main:
        extra = dict(checkpoint=os.path.abspath(checkpoint), model=model_name, dataset=dataset_name, split=split,
                     tta_flip=tta_flip, loss=loss_sum / report.num_images, skipped=data.skipped,
                     **({'intended': intended_dict(result.intended)} if result.intended is not None else {}))
        result.written = write_eval_report(report, output_dir, name, describe_report(report, what), extra)
    return result
