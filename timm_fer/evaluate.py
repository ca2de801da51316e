"""Evaluate a FER checkpoint: ``timm-fer eval`` or ``python -m timm_fer.evaluate``.

Prints overall accuracy, mean class accuracy and per-class accuracy, and writes them as JSON with a confusion
matrix PNG. Loads checkpoints of ``timm-fer train`` (model, classes and input size come with them), plain state
dicts and ``.safetensors`` files. Runs under ``torchrun`` too: each process evaluates a shard.
"""
import argparse
import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from .checkpoint import load_weights, write_text_atomic
from .data import DATASET_NAMES, EVAL_SPLITS, FerDataset, create_fer_dataset, create_fer_transform
from .distributed import DistributedEnv, all_reduce_sum, init_distributed, run_command
from .errors import ConfigError
from .metrics import ClassificationReport, confusion_matrix
from .modeling import add_model_arguments, create_fer_model, parse_model_kwargs, resolve_fer_data_config
from .plot import draw_confusion_matrix
from .runtime import add_runtime_arguments, autocast, prepare_model, resolve_amp_dtype, to_input

__all__ = ['add_eval_parser', 'evaluate_model', 'main', 'run', 'write_eval_report']


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
) -> Tuple[torch.Tensor, float]:
    """Confusion matrix and summed cross-entropy of ``model`` over ``dataset``, summed over all processes.

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
    """
    model.eval()
    num_classes = len(dataset.classes)
    shard = Subset(dataset, range(env.rank, len(dataset), env.world_size))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=workers, pin_memory=env.device.type == 'cuda',
                        generator=torch.Generator())  # its own generator: the global one stays untouched
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=env.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=env.device)
    for images, targets in tqdm(loader, desc='eval', unit='batch', leave=False, disable=not progress):
        targets = targets.to(env.device, non_blocking=True)
        if tta_flip:
            images = torch.cat([images, images.flip(-1)])
        images = to_input(images, env.device, channels_last)
        with autocast(env.device, amp_dtype):
            logits = model(images)
        log_probs = logits.float().log_softmax(dim=-1)
        if tta_flip:
            log_probs = torch.logsumexp(torch.stack(log_probs.chunk(2)), dim=0) - math.log(2)
        loss_sum += F.nll_loss(log_probs, targets, reduction='sum').double()
        confusion += confusion_matrix(targets, log_probs.argmax(dim=-1), num_classes)
    all_reduce_sum(confusion)
    all_reduce_sum(loss_sum)
    return confusion.cpu(), loss_sum.item()


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


def _describe(report: ClassificationReport, what: str) -> str:
    return (f'{what}: accuracy {100 * report.accuracy:.2f}%, mean class accuracy '
            f'{100 * report.mean_class_accuracy:.2f}% ({report.num_images} images)')


def evaluate(args: argparse.Namespace) -> int:
    """Run ``timm-fer eval``: load the checkpoint, evaluate it on a dataset split, print and write the results."""
    env = init_distributed(args.device)
    log = print if env.is_main else (lambda *_: None)
    state_dict, saved = load_weights(args.checkpoint)
    saved = saved or {}
    dataset_name = args.dataset or saved.get('dataset')
    if dataset_name is None:
        raise ConfigError(f'{args.checkpoint} does not say its dataset: pass --dataset ({", ".join(DATASET_NAMES)}).')
    model_name = args.model or saved.get('model') or 'transfer_fer_ir50'
    model_kwargs = dict(saved.get('model_kwargs', {})) if model_name == saved.get('model') else {}
    model_kwargs.update(parse_model_kwargs(args.model_kwargs))
    img_size = args.img_size or saved.get('img_size') or model_kwargs.get('img_size')
    split = args.split or EVAL_SPLITS[dataset_name]
    classes: Optional[Sequence[str]] = args.classes.split(',') if args.classes else None
    if classes is None and dataset_name == 'folder':
        classes = saved.get('classes')
    dataset = create_fer_dataset(dataset_name, args.data_dir, split, classes=classes,
                                 skip_missing=args.skip_missing_images)
    log(dataset.summary())
    if saved.get('classes') is not None and tuple(saved['classes']) != dataset.classes:
        raise ConfigError(
            f'{args.checkpoint} was trained on classes {list(saved["classes"])}, but {dataset_name} {split} has '
            f'{list(dataset.classes)}; evaluate on data with the same classes in the same order (--classes).')
    model, _ = create_fer_model(model_name, len(dataset.classes), img_size, model_kwargs)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        raise ConfigError(
            f'the weights of {args.checkpoint} do not fit {model_name} with {len(dataset.classes)} classes, '
            f'img_size {img_size} and {model_kwargs or "default arguments"}: pass the --model, --model-kwargs and '
            f'--img-size it was trained with. {str(e).splitlines()[0]}') from e
    dataset.transform = create_fer_transform(resolve_fer_data_config(model, img_size))
    model = prepare_model(model, env.device, args.channels_last, args.compile)
    confusion, loss_sum = evaluate_model(
        model, dataset, env, args.batch_size, amp_dtype=resolve_amp_dtype(args.amp, env.device),
        channels_last=args.channels_last, tta_flip=args.tta_flip, workers=args.workers, progress=env.is_main)
    report = ClassificationReport.from_confusion(confusion, dataset.classes)
    if env.is_main:
        name = f'eval-{dataset_name}-{split}' + ('-flip' if args.tta_flip else '')
        what = f'{model_name} on {dataset.display_name} {split}' + (' with flip TTA' if args.tta_flip else '')
        extra = dict(checkpoint=os.path.abspath(args.checkpoint), model=model_name, dataset=dataset_name,
                     split=split, tta_flip=args.tta_flip, loss=loss_sum / report.num_images, skipped=dataset.skipped)
        print(report.format_table())
        print(_describe(report, what))
        output_dir = args.output or os.path.dirname(os.path.abspath(args.checkpoint))
        for path in write_eval_report(report, output_dir, name, _describe(report, what), extra):
            print(f'wrote {path}')
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry of the ``eval`` sub-command."""
    return run_command(evaluate, args, 'timm-fer eval')


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('checkpoint', help='checkpoint of timm-fer train, state dict (.pth) or .safetensors file')
    parser.add_argument('--data-dir', required=True, help='dataset folder')
    parser.add_argument('--dataset', choices=DATASET_NAMES, default=None,
                        help="dataset layout (default: the checkpoint's)")
    parser.add_argument('--split', default=None,
                        help='split to evaluate (default: the reported one: rafdb test, ferplus valid, affectnet val, '
                             'folder val)')
    parser.add_argument('--classes', default=None,
                        help="comma-separated class folders in label order, for --dataset folder (default: the "
                             "checkpoint's)")
    parser.add_argument('--skip-missing-images', action='store_true',
                        help='FERPlus: skip images that have votes but no file, instead of failing')
    parser.add_argument('--model', default=None,
                        help="timm model name (default: the checkpoint's, else transfer_fer_ir50)")
    add_model_arguments(parser)
    parser.add_argument('--batch-size', type=int, default=256, help='images per forward pass and process')
    parser.add_argument('--tta-flip', action='store_true',
                        help='average the softmax of each face with that of its horizontal flip')
    add_runtime_arguments(parser)
    parser.add_argument('--device', default='auto', help='auto (cuda if available, else cpu), cpu, cuda or cuda:N')
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1),
                        help='data loader worker processes')
    parser.add_argument('--output', default=None,
                        help="folder of the JSON and PNG results (default: the checkpoint's folder)")


def add_eval_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``timm-fer eval``."""
    parser = subparsers.add_parser(
        'eval', help='evaluate a checkpoint: accuracy, mean class accuracy, per class, confusion matrix',
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    parser.set_defaults(func=run)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m timm_fer.evaluate``, the same as ``timm-fer eval``."""
    parser = argparse.ArgumentParser(prog='python -m timm_fer.evaluate', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
