"""Export a FER model for deployment: ``timm-fer export`` to ONNX or ``torch.export`` (``.pt2``).

Both graphs take normalised aligned faces (batch, channels, height, width) with a dynamic batch axis and return the
logits. MAD and MSAD are identities in eval, so the graphs are plain and deterministic. The model's name, label
names and preprocessing travel with the file: ONNX metadata properties, or the ``timm_fer.json`` extra file of the
``.pt2`` archive. The ONNX exporter needs the ``export`` extra: ``pip install "timm-fer[export]"``.
"""
import argparse
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch
from timm.data import resolve_data_config
from torch import nn

from .errors import ConfigError, FerError
from .predict import DEFAULT_MODEL, load_fer_model

__all__ = ['EXPORT_FORMATS', 'METADATA_KEY', 'ExportUnavailableError', 'add_export_parser', 'check_export',
           'export_model', 'export_metadata', 'run']

EXPORT_FORMATS = ('onnx', 'torch-export')
METADATA_KEY = 'timm_fer.json'
"""Key of the JSON metadata: ONNX metadata property, or ``.pt2`` extra file (``torch.export.load(path,
extra_files={METADATA_KEY: ''})``)."""
MAX_BATCH_SIZE = 4096
_INSTALL_HINT = 'pip install "timm-fer[export]"'


class ExportUnavailableError(FerError, ImportError):
    """A package the export format needs is not installed."""


def export_metadata(model: nn.Module) -> Dict[str, Any]:
    """What a deployment needs besides the graph: model name and tag, label names, preprocessing of the input."""
    config = resolve_data_config({}, model=model)
    cfg = model.pretrained_cfg
    labels = cfg.get('label_names')
    name = f"{cfg['architecture']}.{cfg['tag']}" if cfg.get('tag') else cfg.get('architecture', type(model).__name__)
    colour = 'grayscale' if config['input_size'][0] == 1 else 'RGB'
    return dict(model=name, label_names=list(labels) if labels else None, input_size=list(config['input_size']),
                mean=list(config['mean']), std=list(config['std']), interpolation=config['interpolation'],
                input=f'aligned faces (ArcFace five-point template), {colour}, scaled to [0, 1], then (x - mean) / std')


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError as e:
        raise ExportUnavailableError(f'this export format needs {module} ({e}): {_INSTALL_HINT}.') from e


def export_model(
        model: nn.Module,
        out: Path,
        export_format: str,
        metadata: Optional[Dict[str, Any]] = None,
        opset_version: Optional[int] = None,
) -> Path:
    """Export ``model`` (put in eval mode) with a dynamic batch axis and write it to ``out``.

    Args:
        model: The model; its ``pretrained_cfg['input_size']`` gives the example input.
        out: File to write (``.onnx`` or ``.pt2`` by convention).
        export_format: 'onnx' (torch's dynamo exporter, single file) or 'torch-export' (``torch.export.save``).
        metadata: JSON-ready dict stored with the graph; default :func:`export_metadata`.
        opset_version: ONNX opset; default the exporter's.
    """
    if export_format not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format '{export_format}'; choose from {', '.join(EXPORT_FORMATS)}.")
    model.eval()
    metadata = metadata if metadata is not None else export_metadata(model)
    device = next(model.parameters()).device
    example = torch.randn(2, *model.pretrained_cfg['input_size'], device=device)
    dynamic_shapes = ({0: torch.export.Dim('batch', min=1, max=MAX_BATCH_SIZE)},)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if export_format == 'torch-export':
        program = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)
        torch.export.save(program, out, extra_files={METADATA_KEY: json.dumps(metadata)})
        return out
    _require('onnxscript')
    program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=dynamic_shapes,
                                input_names=['faces'], output_names=['logits'], opset_version=opset_version,
                                verbose=False)
    program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    program.save(out)
    return out


def check_export(model: nn.Module, path: Path, export_format: str, batch_sizes: Sequence[int] = (1, 3)) -> float:
    """Largest absolute difference between the exported file's logits and the eager model's, over ``batch_sizes``.

    ONNX files run with ONNX Runtime (CPU), ``.pt2`` files through ``torch.export.load``.
    """
    model.eval()
    device = next(model.parameters()).device
    if export_format == 'onnx':
        _require('onnxruntime')
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])

        def run_exported(x: torch.Tensor) -> np.ndarray:
            return session.run(None, {session.get_inputs()[0].name: x.cpu().numpy()})[0]
    else:
        exported = torch.export.load(path).module()

        def run_exported(x: torch.Tensor) -> np.ndarray:
            with torch.inference_mode():
                return exported(x).cpu().numpy()
    difference = 0.
    for batch_size in batch_sizes:
        x = torch.randn(batch_size, *model.pretrained_cfg['input_size'], device=device)
        with torch.inference_mode():
            expected = model(x).cpu().numpy()
        actual = run_exported(x)
        if actual.shape != expected.shape:
            raise RuntimeError(f'exported {path} gives logits of shape {actual.shape}, eager {expected.shape}.')
        difference = max(difference, float(np.abs(actual - expected).max()))
    return difference


def run(args: argparse.Namespace) -> int:
    """Run ``timm-fer export``: load the model, export it, and compare the file's outputs with the eager model's."""
    model, weights = load_fer_model(args.model, args.checkpoint, args.random_weights)
    out = export_model(model, args.out, args.format, opset_version=args.opset)
    size_mib = out.stat().st_size / 2 ** 20
    print(f'wrote {out} ({args.format}, {size_mib:.1f} MiB) of {args.model}, weights: {weights}')
    if not args.no_check:
        difference = check_export(model, out, args.format)
        print(f'max |exported - eager| over batch sizes 1 and 3: {difference:.2e}')
        if difference > args.atol:
            raise FerError(f'the exported model differs from the eager one by {difference:.2e} > --atol {args.atol}.')
    return 0


def add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``timm-fer export``."""
    parser = subparsers.add_parser(
        'export', help='export a model to ONNX or torch.export (.pt2) with a dynamic batch axis',
        description='Examples:\n  timm-fer export --checkpoint model.safetensors --format onnx --out transfer.onnx\n'
                    '  timm-fer export --model transfer_fer_ir50.ferplus --checkpoint ferplus.pth '
                    '--format torch-export --out transfer.pt2',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default=DEFAULT_MODEL, help=f'model and tag (default: {DEFAULT_MODEL})')
    parser.add_argument('--checkpoint', type=Path, help='local weights file for --model')
    parser.add_argument('--random-weights', action='store_true',
                        help='when no weights can be loaded, export random weights (to test a deployment only)')
    parser.add_argument('--format', choices=EXPORT_FORMATS, required=True, help='onnx or torch-export')
    parser.add_argument('--out', type=Path, required=True, help='file to write, e.g. model.onnx or model.pt2')
    parser.add_argument('--opset', type=int, help="ONNX opset version (default: the exporter's)")
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='largest accepted difference between exported and eager logits (default: 1e-4)')
    parser.add_argument('--no-check', action='store_true', help='skip running the exported file against eager')
    parser.set_defaults(func=run)
