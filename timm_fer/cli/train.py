"""``timm-fer train`` and ``python -m timm_fer.train`` (the entry point for torchrun)."""
import argparse
from typing import TYPE_CHECKING, List, Optional

from ..constants import DATASET_NAMES, PAPER_INIT_TAG, TRAIN_CHOICES
from . import COMMANDS
from .common import add_model_arguments, add_runtime_arguments, parse_model_kwargs, run_command

if TYPE_CHECKING:
    from ..engine import TrainConfig

__all__ = ['add_train_parser', 'config_from_args', 'main', 'run']

DESCRIPTION = """Train a FER model with the paper's protocol.

One command per dataset; the recipe of TransFER (section 4.2) is the default and every part of it is a flag.
Class-balanced up-sampling, the paper's augmentation, SGD with a step schedule (or cosine, with warm-up and label
smoothing, for training from scratch), evaluation after every epoch, a JSON-lines metrics file, and atomic
checkpoints that --resume continues exactly (same epoch, step, sampler position and random states, so the final
weights match an uninterrupted run).

Several processes (GPUs or machines) run the same command through torchrun:
torchrun --nproc-per-node N -m timm_fer.train ...  (--batch-size is the global batch)
"""


def config_from_args(args: argparse.Namespace) -> 'TrainConfig':
    """The run's settings from the parsed flags: the dataset's recipe, overridden by the flags given."""
    from ..engine import TrainConfig

    return TrainConfig.from_recipe(
        args.dataset, args.data_dir, evaluate=not args.no_eval, eval_split=args.eval_split,
        classes=args.classes.split(',') if args.classes else None, skip_missing_images=args.skip_missing_images,
        skip_bad_images=args.skip_bad_images, model=args.model, model_kwargs=parse_model_kwargs(args.model_kwargs),
        img_size=args.img_size,
        pretrained_tag=None if args.no_pretrained else args.pretrained_tag,
        initial_checkpoint=args.initial_checkpoint, epochs=args.epochs, iterations=args.iterations,
        sched=args.sched, milestones=args.milestones, warmup=args.warmup, smoothing=args.smoothing,
        soft_labels=args.soft_labels, neutral_vote_weight=args.neutral_vote_weight,
        original_labels=args.original_labels, original_label_weight=args.original_label_weight,
        ema_decay=args.ema_decay,
        lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay, batch_size=args.batch_size,
        grad_accum_steps=args.grad_accum_steps, sampler=args.sampler, metric=args.metric,
        augment=not args.no_augment, rotation=args.rotation, crop_scale=args.crop_scale, hflip=args.hflip,
        erase_prob=args.erase_prob, zoom=tuple(args.zoom), photometric=args.photometric,
        degrade=args.degrade, amp=args.amp, channels_last=args.channels_last, compile=args.compile,
        sync_bn=args.sync_bn, seed=args.seed, workers=args.workers, in_memory=args.in_memory,
        output=args.output,
        checkpoint_every_steps=args.checkpoint_every_steps, stop_after_steps=args.stop_after_steps)


def _train(args: argparse.Namespace) -> int:
    from ..engine import train

    train(config_from_args(args), resume=args.resume, device=args.device)
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry of the ``train`` sub-command."""
    return run_command(_train, args, 'timm-fer train')


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group('data')
    data.add_argument('--dataset', required=True, choices=DATASET_NAMES,
                      help='dataset layout and recipe: rafdb, ferplus, affectnet7, affectnet8, or folder (one '
                           'folder per class, RAF-DB recipe)')
    data.add_argument('--data-dir', required=True, help='dataset folder')
    data.add_argument('--eval-split', default=None,
                      help='split evaluated after each epoch (default: rafdb test, ferplus valid, affectnet val, '
                           'folder val)')
    data.add_argument('--no-eval', action='store_true', help='do not evaluate after each epoch')
    data.add_argument('--classes', default=None,
                      help='comma-separated class folders in label order, for --dataset folder (default: sorted)')
    data.add_argument('--skip-missing-images', action='store_true',
                      help='FERPlus: skip images that have votes but no file, instead of failing')
    data.add_argument('--skip-bad-images', action='store_true',
                      help='leave out images that cannot be decoded (every image is checked before training starts) '
                           'and list them, instead of failing')
    data.add_argument('--original-labels', default=None, metavar='CSV',
                      help="FERPlus: FER2013's original labels (fer2013_original_labels.csv), joined by row: scored "
                           'as intended expressions at every evaluation, and mixed into the targets by '
                           '--original-label-weight')
    data.add_argument('--workers', type=int, default=None, help='data loader worker processes per process')
    data.add_argument('--in-memory', action='store_true',
                      help='decode every training face once into memory (small datasets such as FERPlus: 28k faces '
                           'of 48x48 take 59 MiB); the run is the same, without loader workers')

    model = parser.add_argument_group('model')
    model.add_argument('--model', default=None,
                       help="timm model name (default: the recipe's: transfer_fer_ir50, transfer_fer_ir50_b4 for "
                            'AffectNet)')
    add_model_arguments(model)
    model.add_argument('--pretrained-tag', default=PAPER_INIT_TAG,
                       help="start from MODEL.TAG when timm can load it (default: the paper's initialisation)")
    model.add_argument('--no-pretrained', action='store_true', help='start from a random initialisation')
    model.add_argument('--initial-checkpoint', default=None,
                       help='start from the weights of this local file (timm pretrained_cfg_overlay file)')
    model.add_argument('--sync-bn', action='store_true',
                       help='synchronise BatchNorm statistics across processes (CUDA only)')

    recipe = parser.add_argument_group('recipe (defaults: the dataset\'s recipe, printed at start)')
    length = recipe.add_mutually_exclusive_group()
    length.add_argument('--epochs', type=int, default=None, help='training length in epochs')
    length.add_argument('--iterations', type=int, default=None, help='training length in optimiser steps')
    recipe.add_argument('--milestones', type=int, nargs='+', default=None,
                        help="epochs (or iterations) where lr is x0.1 (default: the recipe's, scaled to the length)")
    recipe.add_argument('--sched', choices=TRAIN_CHOICES['sched'], default='step',
                        help="learning-rate schedule: step (x0.1 at --milestones, the paper's) or cosine (to 0 at the "
                             'end, stepped every iteration)')
    recipe.add_argument('--warmup', type=int, default=0,
                        help='epochs (iterations with --iterations) of linear warm-up to --lr')
    recipe.add_argument('--lr', type=float, default=None, help='peak learning rate')
    recipe.add_argument('--smoothing', type=float, default=0., help='label smoothing of the cross-entropy')
    recipe.add_argument('--soft-labels', action='store_true',
                        help="train on each face's vote distribution (FERPlus' ten annotators), not its majority label")
    recipe.add_argument('--neutral-vote-weight', type=float, default=1.,
                        help='with --soft-labels: weigh the votes for neutral by this (e.g. 0.5), so a face some '
                             'annotators call neutral and others an expression leans to the expression')
    recipe.add_argument('--original-label-weight', type=float, default=0.,
                        help="share of each face's original (intended) label in its target, 0-1, the rest its votes "
                             'or majority label; contempt keeps its votes (FER2013 has no contempt)')
    recipe.add_argument('--ema-decay', type=float, default=None,
                        help='keep an exponential moving average of the weights (e.g. 0.999); evaluation and the '
                             'weights that checkpoints serve are the average')
    recipe.add_argument('--momentum', type=float, default=None, help='SGD momentum')
    recipe.add_argument('--weight-decay', type=float, default=None, help='SGD weight decay')
    recipe.add_argument('--batch-size', type=int, default=None,
                        help='GLOBAL batch size; each process takes batch / (processes x accumulation steps)')
    recipe.add_argument('--grad-accum-steps', type=int, default=1, help='micro-batches per optimiser step')
    recipe.add_argument('--sampler', choices=TRAIN_CHOICES['sampler'], default='balanced',
                        help="balanced: every class up-sampled to the largest (the paper's); uniform: every image "
                             'once per epoch (for overall accuracy on imbalanced data such as FERPlus)')
    recipe.add_argument('--metric', choices=TRAIN_CHOICES['metric'], default=None,
                        help='evaluation metric that selects best.pth')

    augment = parser.add_argument_group('augmentation')
    augment.add_argument('--no-augment', action='store_true', help='train on resized faces only')
    augment.add_argument('--rotation', type=float, default=10., help='largest random rotation, degrees')
    augment.add_argument('--crop-scale', type=float, default=1.1,
                         help='enlarge the face this many times before the random crop')
    augment.add_argument('--hflip', type=float, default=0.5, help='horizontal flip probability')
    augment.add_argument('--erase-prob', type=float, default=0.25, help='random erasing probability')
    augment.add_argument('--zoom', type=float, nargs=2, default=(1., 1.), metavar=('LOW', 'HIGH'),
                         help='frame each face tighter or looser by a scale drawn from LOW-HIGH (e.g. 0.8 1.25)')
    augment.add_argument('--photometric', type=float, default=0.,
                         help='probability of per-face contrast, brightness and gamma jitter')
    augment.add_argument('--degrade', type=float, default=0.,
                         help='probability of each of blur, down-up sampling and noise, per face')

    run_group = parser.add_argument_group('run')
    run_group.add_argument('--device', default='auto', help='auto (cuda if available, else cpu), cpu, cuda, cuda:N')
    add_runtime_arguments(run_group)
    run_group.add_argument('--seed', type=int, default=42, help='seed of initialisation, sampling and augmentation')
    run_group.add_argument('--output', default=None, help='run folder (default: runs/DATASET-MODEL)')
    run_group.add_argument('--resume', nargs='?', const='', default=None, metavar='CHECKPOINT',
                           help='continue a stopped run exactly, from CHECKPOINT (default: OUTPUT/last.pth)')
    run_group.add_argument('--checkpoint-every-steps', type=int, default=None,
                           help='also checkpoint every N optimiser steps inside epochs')
    run_group.add_argument('--stop-after-steps', type=int, default=None,  # test only: stop as if killed, unsaved
                           help=argparse.SUPPRESS)


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``timm-fer train``."""
    parser = subparsers.add_parser('train', help=COMMANDS['train'].help,
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    parser.set_defaults(func=run)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m timm_fer.train``, the same as ``timm-fer train``."""
    parser = argparse.ArgumentParser(prog='python -m timm_fer.train', description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return run(parser.parse_args(argv))

