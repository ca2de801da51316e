"""Pieces shared by the sub-commands: registering a command, one error handler, and the runtime and model options.

Building a parser imports no torch (choices and defaults come from :mod:`timm_fer.constants`), so ``--help`` and
argument errors answer at once; a command's body imports the modules it runs when it runs."""
import argparse
import ast
import sys
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from ..constants import AMP_CHOICES, BACKENDS, DEFAULT_MODEL
from ..errors import ConfigError, FerError
from ..utils.options import check_given
from .ranges import OPTION_RANGES

__all__ = ['CHECKPOINT_HELP', 'add_backend_arguments', 'add_checkpoint_arguments', 'add_command',
           'add_model_arguments', 'add_overwrite_argument', 'add_runtime_arguments', 'add_weights_arguments',
           'label_names_of', 'parse_model_kwargs', 'run_command']

CHECKPOINT_HELP = ("weights: a checkpoint of timm-fer train or timm's train.py, a Hub model folder or Hugging Face "
                   'Trainer output folder, or a .safetensors/.pth/.ckpt file (plain, PyTorch Lightning, DDP, '
                   'torch.compile)')
"""Help of ``--checkpoint``, for every command taking one."""

Command = Callable[[argparse.Namespace], int]
"""A sub-command's body: the parsed flags in, the exit status out."""


def add_command(subparsers: argparse._SubParsersAction, name: str, command: Command, help: str,
                description: Optional[str] = None, examples: Sequence[str] = ()) -> argparse.ArgumentParser:
    """Register ``timm-fer NAME``, which runs ``command`` through :func:`run_command`; its parser, for the flags.

    Args:
        subparsers: The ``timm-fer`` parser's sub-commands.
        name: The sub-command.
        command: What it runs.
        help: Its line in ``timm-fer --help``.
        description: Its ``--help`` text, kept as written.
        examples: Command lines shown under 'Examples:' after the description.
    """
    parts = [description] if description else []
    if examples:
        parts.append('Examples:\n' + '\n'.join(f'  {example}' for example in examples))
    parser = subparsers.add_parser(name, help=help, description='\n'.join(parts) or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=partial(run_command, command, prog=f'timm-fer {name}'))
    return parser


def run_command(command: Command, args: argparse.Namespace, prog: str) -> int:
    """Run a sub-command: its numeric options are checked first (:data:`~timm_fer.cli.ranges.OPTION_RANGES`, before
    the command imports torch), errors caused by data or options print as one line (exit status 2), and a process
    group that the command joined is left however it ends."""
    try:
        check_given(OPTION_RANGES.get(prog.split()[-1], {}), vars(args))
        return command(args)
    except FerError as e:
        print(f'{prog}: error: {e}', file=sys.stderr)
        return 2
    finally:
        if 'torch.distributed' in sys.modules:  # else no process group was joined, and torch stays unimported
            from ..engine.distributed import cleanup_distributed
            cleanup_distributed()


def parse_model_kwargs(items: Optional[Sequence[str]]) -> Dict[str, Any]:
    """``key=value`` strings to a dict; values are Python literals (``(1, 1, 1)``, ``0.5``), else strings."""
    kwargs = {}
    for item in items or ():
        key, separator, value = item.partition('=')
        if not separator or not key.isidentifier():
            raise ConfigError(f"--model-kwargs takes key=value pairs, got '{item}'.")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return kwargs


def add_model_arguments(parser: argparse._ActionsContainer) -> None:
    """Options that shape the model (``--model-kwargs``, ``--img-size``), shared by ``train`` and ``eval``."""
    parser.add_argument('--model-kwargs', nargs='*', default=[], metavar='KEY=VALUE',
                        help='extra model arguments, values parsed as Python literals, e.g. depth=4 '
                             'stem_layers="(1, 1, 1)"')
    parser.add_argument('--img-size', type=int, default=None,
                        help="square input size (default: the model's, 112 for TransFER)")


def add_overwrite_argument(parser: argparse._ActionsContainer) -> None:
    """``--overwrite``: replace files already at the command's output paths (an input never), for every command
    whose outputs :class:`~timm_fer.utils.OutputPlan` plans."""
    parser.add_argument('--overwrite', action='store_true',
                        help='replace files already at the output paths (never an input of the run); without it, '
                             'such a file stops the command before any work')


def add_weights_arguments(parser: argparse._ActionsContainer, several: Optional[str] = None) -> None:
    """``--model``, ``--checkpoint`` and ``--random-weights`` (with :func:`add_checkpoint_arguments`): which model
    answers, for ``predict`` and ``serve``.

    Args:
        parser: The command's parser.
        several: The default of a ``--model`` that takes several models (a list, the first the default), for a
            command that loads several; None: ``--model`` names one.
    """
    if several is None:
        parser.add_argument('--model', default=None,
                            help='model and tag; the tag sets labels and preprocessing (default: the model a '
                                 f'checkpoint names, else {DEFAULT_MODEL})')
    else:
        parser.add_argument('--model', nargs='+', action='extend', default=None, metavar='MODEL',
                            help='model and tag; the tag sets labels and preprocessing. Several (--model A B, or '
                                 '--model A --model B) are each loaded once and chosen per request; the first is the '
                                 f'default (default: the model a checkpoint names, else {several})')
    parser.add_argument('--checkpoint', type=Path,
                        help=CHECKPOINT_HELP)
    parser.add_argument('--random-weights', action='store_true',
                        help='when no weights can be loaded, run with random weights (meaningless, demo only)')
    add_checkpoint_arguments(parser)


def add_checkpoint_arguments(parser: argparse._ActionsContainer) -> None:
    """``--label-names``, ``--class-map`` and ``--ema``: how a ``--checkpoint`` is read, for every command taking
    one."""
    names = parser.add_mutually_exclusive_group()
    names.add_argument('--label-names', nargs='+', metavar='NAME',
                       help="class names of the model's outputs, in order (default: those the checkpoint carries, "
                            "else the class folders of the --data-dir that timm's train.py recorded, else class_0 ...)")
    names.add_argument('--class-map', type=Path, metavar='FILE',
                       help="the class names as a timm class map file (train.py's --class-map: one name per line, in "
                            "label order)")
    parser.add_argument('--ema', action='store_true',
                        help="load the weight average the checkpoint holds (timm's train.py --model-ema: "
                             "state_dict_ema)")


def label_names_of(args: argparse.Namespace) -> Optional[Tuple[str, ...]]:
    """The class names that ``--label-names`` or ``--class-map`` give, else None."""
    if args.class_map is not None:
        from ..hub import read_class_map

        return read_class_map(args.class_map)
    return tuple(args.label_names) if args.label_names else None


def add_runtime_arguments(parser: argparse._ActionsContainer) -> None:
    """``--amp``, ``--channels-last`` / ``--no-channels-last`` and ``--compile``."""
    parser.add_argument('--amp', choices=AMP_CHOICES, default='auto',
                        help='autocast precision; auto: bf16 where the device runs it fast (CUDA with bf16, CPUs '
                             'with AVX512-BF16 or AMX), else fp32')
    parser.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=True,
                        help='run convolutions in channels-last memory format (default: on)')
    parser.add_argument('--compile', action='store_true', help='torch.compile the model')


def add_backend_arguments(parser: argparse._ActionsContainer) -> None:
    """``--backend``, ``--int8`` and ``--threads``, for the commands that only run inference."""
    parser.add_argument('--backend', choices=BACKENDS, default='auto',
                        help='where the model runs; auto: ONNX Runtime for a named model in fp32 on the CPU (exported '
                             'once and cached), else torch; onnxruntime runs in fp32 (--amp auto means fp32 with it) '
                             '(default: auto)')
    parser.add_argument('--int8', action='store_true',
                        help='run the Linear layers in int8 (dynamic quantisation, CPU): faster, close to fp32; the '
                             'other layers run in fp32 (--amp auto means fp32 with --int8)')
    parser.add_argument('--threads', type=int, metavar='N',
                        help='intra-op threads of the model (default: one per core that no other process keeps busy) '
                             'and of the face detector (default: one per core)')
