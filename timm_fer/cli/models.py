"""``timm-fer models``: list the registered models with their size, and classify a random batch with each."""
import argparse

from . import COMMANDS
from .common import run_command

__all__ = ['add_models_parser']


def _models(args: argparse.Namespace) -> int:
    from ..hub import list_and_classify

    print('\n'.join(list_and_classify(args.batch_size, args.seed)))
    return 0


def add_models_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``timm-fer models``."""
    parser = subparsers.add_parser('models', help=COMMANDS['models'].help)
    parser.add_argument('--batch-size', type=int, default=2, help='images in the random batch (1-256)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random batch')
    parser.set_defaults(func=lambda args: run_command(_models, args, 'timm-fer models'))
