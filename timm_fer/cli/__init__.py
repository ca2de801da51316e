"""Command line of timm-fer: ``timm-fer COMMAND`` or ``python -m timm_fer COMMAND``.

One small module per command, each a thin argparse wrapper over a Python function of the library.
"""
import argparse
import os
import shlex
import sys
from importlib import import_module
from typing import Dict, Iterable, List, NamedTuple, Optional

__all__ = ['COMMANDS', 'build_parser', 'main']


class CommandEntry(NamedTuple):
    """Where a sub-command's parser comes from, and its line in ``timm-fer --help``."""
    module: str
    add_parser: str
    help: str


COMMANDS: Dict[str, CommandEntry] = {
    'models': CommandEntry('.models', 'add_models_parser',
                           'list the registered models with params and MACs, and classify a random batch with each'),
    'train': CommandEntry('.train', 'add_train_parser',
                          "train with the paper's protocol (torchrun for many processes)"),
    'eval': CommandEntry('.eval', 'add_eval_parser',
                         'evaluate a checkpoint: accuracy, mean class accuracy, per class, confusion matrix'),
    'convert': CommandEntry('.convert', 'add_convert_parser',
                            'convert face.evoLVe IR and timm ViT-S checkpoints into a Hub model folder'),
    'push': CommandEntry('.convert', 'add_push_parser',
                         'push a Hub model folder to the Hugging Face Hub (writing it from a checkpoint first)'),
    'predict': CommandEntry('.predict', 'add_predict_parser',
                            'detect, align and classify the faces in photos and videos'),
    'export': CommandEntry('.export', 'add_export_parser',
                           'export a model to ONNX or torch.export (.pt2) with a dynamic batch axis'),
    'serve': CommandEntry('.serve', 'add_serve_parser',
                          'serve a REST API, a live WebSocket and a web page with the model loaded once'),
}
"""The sub-commands, in the order ``timm-fer --help`` lists them. Each module is imported only when its sub-command is
named, and builds its parser without torch (choices and defaults come from :mod:`timm_fer.constants`); its body
imports torch, timm and the models when it runs. So ``timm-fer``, every ``--help`` and argument errors answer at
once."""


def build_parser(commands: Iterable[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The ``timm-fer`` parser: every sub-command listed, those in ``commands`` with their options (which imports
    their modules, none of which imports torch)."""
    parser = argparse.ArgumentParser(prog='timm-fer', description='Facial expression recognition for timm.')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    wanted = set(commands)
    for name, entry in COMMANDS.items():
        if name in wanted:
            getattr(import_module(entry.module, __name__), entry.add_parser)(subparsers)
        else:
            subparsers.add_parser(name, help=entry.help)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``timm-fer``; errors caused by data or options print one line and exit with status 2."""
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith('-')), None)
    parser = build_parser([command] if command in COMMANDS else [])
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    args.command_line = 'timm-fer ' + shlex.join(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, not at exit, so that a reader who left is caught below
        return status
    except BrokenPipeError:  # the reader of the output left early (timm-fer models | head): stop without a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush of stdout fails otherwise
        return 1
    except KeyboardInterrupt:  # Ctrl-C where a command has no clean stop of its own (loading a model, say)
        print(f'timm-fer {args.command}: interrupted', file=sys.stderr)
        return 130
