"""``timm-fer export``: a model to ONNX or torch.export (``.pt2``), checked against the eager model."""
import argparse
from pathlib import Path

from ..constants import DEFAULT_MODEL, EXPORT_FORMATS, ONNX_OPSET_BOUNDS
from . import COMMANDS
from .common import CHECKPOINT_HELP, add_checkpoint_arguments, add_command, add_overwrite_argument, label_names_of

__all__ = ['add_export_parser']


def _export(args: argparse.Namespace) -> int:
    from ..hub import load_model
    from ..inference.backends import note
    from ..inference.export import export_checked
    from ..models import tagged_name
    from ..utils.options import check_options
    from ..utils.outputs import OutputPlan

    check_options(export_checked, atol=args.atol, opset_version=args.opset)
    OutputPlan([args.checkpoint], overwrite=args.overwrite).file(args.out, '--out')
    model, weights = load_model(args.model, args.checkpoint, random_weights=args.random_weights,
                                label_names=label_names_of(args), use_ema=args.ema, log=note)
    out, difference = export_checked(model, args.out, args.format, atol=args.atol, check=not args.no_check,
                                     opset_version=args.opset)
    name = tagged_name(model.pretrained_cfg['architecture'], model.pretrained_cfg.get('tag'))
    print(f'wrote {out} ({args.format}, {out.stat().st_size / 2 ** 20:.1f} MiB) of {name}, weights: {weights}')
    if difference is not None:
        print(f'max |exported - eager| over batch sizes 1 and 3: {difference:.2e}')
    return 0


def add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``timm-fer export``."""
    parser = add_command(
        subparsers, 'export', _export, COMMANDS['export'].help,
        examples=('timm-fer export --format onnx --out transfer_fer_compact.onnx   (the shipped FERPlus weights)',
                  'timm-fer export --checkpoint runs/ferplus-transfer_fer_ir50/best.pth --format onnx --out '
                  'transfer.onnx',
                  'timm-fer export --model transfer_fer_ir50.ferplus --checkpoint ferplus.safetensors --format '
                  'torch-export --out transfer.pt2'))
    parser.add_argument('--model', default=None,
                        help=f'model and tag (default: the model a checkpoint names, else {DEFAULT_MODEL})')
    parser.add_argument('--checkpoint', type=Path, help=CHECKPOINT_HELP)
    parser.add_argument('--random-weights', action='store_true',
                        help='when no weights can be loaded, export random weights (to test a deployment only)')
    add_checkpoint_arguments(parser)
    parser.add_argument('--format', choices=EXPORT_FORMATS, required=True, help='onnx or torch-export')
    parser.add_argument('--out', type=Path, required=True, help='file to write, e.g. model.onnx or model.pt2')
    add_overwrite_argument(parser)
    parser.add_argument('--opset', type=int,
                        help="ONNX opset version, {}-{} (default: the exporter's)".format(*ONNX_OPSET_BOUNDS))
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='largest accepted difference between exported and eager logits (default: 1e-4)')
    parser.add_argument('--no-check', action='store_true', help='skip running the exported file against eager')
