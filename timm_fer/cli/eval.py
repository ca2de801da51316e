"""``timm-fer eval``: evaluate a checkpoint on a dataset split."""
import argparse
import os
from typing import List, Optional

from ..constants import DATASET_NAMES
from . import COMMANDS
from .common import (
    add_command,
    add_model_arguments,
    add_overwrite_argument,
    add_runtime_arguments,
    parse_model_kwargs,
    run_command,
)

__all__ = ['add_eval_parser', 'main']

DESCRIPTION = """Evaluate a FER checkpoint.

Prints overall accuracy, mean class accuracy and per-class accuracy, and writes them as JSON with a confusion
matrix PNG (in the current folder, or --output). Loads checkpoints of timm-fer train (model, classes and input size
come with them), Hub model folders, plain state dicts and .safetensors files. Runs under torchrun too: each process
evaluates a shard.
"""


def _evaluate(args: argparse.Namespace) -> int:
    from ..engine.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.checkpoint, args.data_dir, dataset=args.dataset, split=args.split,
        classes=args.classes.split(',') if args.classes else None, skip_missing_images=args.skip_missing_images,
        original_labels=args.original_labels, model=args.model, model_kwargs=parse_model_kwargs(args.model_kwargs),
        img_size=args.img_size,
        batch_size=args.batch_size, tta_flip=args.tta_flip, amp=args.amp, channels_last=args.channels_last,
        compile_model=args.compile, device=args.device, workers=args.workers, output=args.output,
        overwrite=args.overwrite)
    if result.written:
        print(result.report.format_table())
        print(result.summary)
        for path in result.written:
            print(f'wrote {path}')
    return 0


def add_eval_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``timm-fer eval``."""
    _add_arguments(add_command(
        subparsers, 'eval', _evaluate, COMMANDS['eval'].help, description=DESCRIPTION))


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m timm_fer.evaluate`` (for torchrun), the same as ``timm-fer eval``."""
    parser = argparse.ArgumentParser(prog='python -m timm_fer.evaluate', description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return run_command(_evaluate, parser.parse_args(argv), 'timm-fer eval')


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('checkpoint', help='checkpoint of timm-fer train, Hub model folder, state dict (.pth) or '
                                           '.safetensors file')
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
    parser.add_argument('--original-labels', default=None, metavar='CSV',
                        help="FERPlus: FER2013's original labels (fer2013_original_labels.csv), to score the intended "
                             'expressions too (accuracy, per-class recall, expressive faces called neutral)')
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
                        help='folder of the JSON and PNG results, eval-DATASET-SPLIT.json and .png (default: the '
                             'current folder)')
    add_overwrite_argument(parser)
