"""Command line of timm-fer: ``timm-fer COMMAND`` or ``python -m timm_fer COMMAND``.

One small module per command, each a thin argparse wrapper over a Python function of the library.
"""
import argparse
import shlex
import sys
from typing import List, Optional

from .convert import add_convert_parser, add_push_parser
from .eval import add_eval_parser
from .export import add_export_parser
from .models import add_models_parser
from .predict import add_predict_parser
from .train import add_train_parser

__all__ = ['build_parser', 'main']


def build_parser() -> argparse.ArgumentParser:
    """The ``timm-fer`` parser with every sub-command."""
    parser = argparse.ArgumentParser(prog='timm-fer', description='Facial expression recognition for timm.')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    for add_parser in (add_models_parser, add_train_parser, add_eval_parser, add_convert_parser, add_push_parser,
                       add_predict_parser, add_export_parser):
        add_parser(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``timm-fer``; errors caused by data or options print one line and exit with status 2."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    args.command_line = 'timm-fer ' + shlex.join(argv)
    return args.func(args)
