"""Export a FER model for deployment (``timm-fer export``): to ONNX or ``torch.export`` (``.pt2``).

Both graphs take normalised aligned faces (batch, channels, height, width) with a dynamic batch axis and return the
logits. MAD and MSAD are identities in eval, so the graphs are plain and deterministic. The model's name, label
names and preprocessing travel with the file: ONNX metadata properties, or the ``timm_fer.json`` extra file of the
``.pt2`` archive, with the SHA-256 of the weights (:func:`weights_digest`), so a file names the weights it holds.
The ONNX exporter needs the ``export`` extra: ``pip install "timm-fer[export]"``.
"""
import contextlib
import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..constants import EXPORT_FORMATS, ONNX_OPSET_BOUNDS
from ..errors import ConfigError, ExportUnavailableError, FerError
from ..faces import face_template
from ..hub import resolve_fer_data_config
from ..models import tagged_name
from ..utils.atomic import write_atomic
from ..utils.options import Range, check_output_path, option_ranges

__all__ = ['EXPORT_FORMATS', 'METADATA_KEY', 'ONNX_OPSETS', 'check_export', 'export_checked', 'export_metadata',
           'export_model', 'quiet_onnx', 'read_onnx_metadata', 'weights_digest']

METADATA_KEY = 'timm_fer.json'
"""Key of the JSON metadata: ONNX metadata property, or ``.pt2`` extra file (``torch.export.load(path,
extra_files={METADATA_KEY: ''})``)."""
ONNX_OPSETS = Range(*ONNX_OPSET_BOUNDS, integer=True, optional=True, flag='--opset')
"""ONNX opsets that export (:data:`~timm_fer.constants.ONNX_OPSET_BOUNDS`)."""
MAX_BATCH_SIZE = 4096
_INSTALL_HINT = 'pip install "timm-fer[export]"'
_ONNX_MODEL_METADATA = 14
"""Field number of ``metadata_props`` in ONNX's ``ModelProto``; 1 and 2 are the key and value of each entry."""
ONNX_RUNTIME_ERRORS_ONLY = 3
"""ONNX Runtime's log severity that reports errors only: its warnings (an unused initializer, say) are no news to
the user."""


def weights_digest(model: nn.Module) -> str:
    """A short SHA-256 of the model's parameters and buffers, names and values: the key of its cached files."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def quiet_onnx() -> Iterator[None]:
    """Keep the warnings of the ONNX exporter, onnxscript and ONNX Runtime's quantiser off standard error while
    they run: Python warnings, and log records (the quantiser logs on the root logger, which would otherwise set up
    a handler on standard error for good)."""
    root = logging.getLogger()
    quiet = logging.NullHandler()
    root.addHandler(quiet)  # a record on the root logger then finds a handler, and the root logger stays as it was
    names = ('onnxscript', 'onnx_ir', 'torch.onnx', 'onnxruntime')
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
        root.removeHandler(quiet)


def export_metadata(model: nn.Module, digest: Optional[str] = None) -> Dict[str, Any]:
    """What a deployment needs besides the graph: model name and tag, label names, preprocessing of the input, the
    face template (its name and its five points (x, y) in pixel-index coordinates of the input, where a similarity
    transform puts a face's left eye, right eye, nose and mouth corners, as seen in the image), and the weights'
    :func:`weights_digest` (``digest`` when already computed)."""
    config = resolve_fer_data_config(model)
    cfg = model.pretrained_cfg
    labels = cfg.get('label_names')
    name = tagged_name(cfg.get('architecture', type(model).__name__), cfg.get('tag'))
    colour = 'grayscale' if config['input_size'][0] == 1 else 'RGB'
    points = face_template(tuple(config['input_size'][1:]), config['face_template'])
    return dict(model=name, label_names=list(labels) if labels else None, input_size=list(config['input_size']),
                mean=list(config['mean']), std=list(config['std']), interpolation=config['interpolation'],
                face_template=config['face_template'], face_template_points=np.round(points, 4).tolist(),
                input=f"faces aligned to the five-point template '{config['face_template']}' (face_template_points), "
                      f'{colour}, scaled to [0, 1], then (x - mean) / std',
                weights_digest=digest or weights_digest(model))


def _varint(stream: BinaryIO) -> Optional[int]:
    """The next base-128 varint of a protobuf ``stream``; None at its end."""
    value = shift = 0
    while True:
        byte = stream.read(1)
        if not byte:
            if shift:
                raise ValueError('the data ends inside a number')
            return None
        value |= (byte[0] & 0x7f) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError('a number is longer than 64 bits')


def _fields(stream: BinaryIO, number: int) -> Iterator[bytes]:
    """The payloads of the length-delimited fields ``number`` of the protobuf message in ``stream``; the other fields
    are skipped by seeking, unread."""
    while True:
        tag = _varint(stream)
        if tag is None:
            return
        wire_type = tag & 7
        if wire_type == 0:
            _varint(stream)
        elif wire_type == 2:
            length = _varint(stream)
            if length is None:
                raise ValueError('the data ends inside a field')
            if tag >> 3 == number:
                payload = stream.read(length)
                if len(payload) < length:
                    raise ValueError('the data ends inside a field')
                yield payload
            else:
                stream.seek(length, os.SEEK_CUR)
        elif wire_type in (1, 5):
            stream.seek(8 if wire_type == 1 else 4, os.SEEK_CUR)
        else:
            raise ValueError(f'wire type {wire_type} is not one that ONNX files use')


def read_onnx_metadata(path: Path) -> Dict[str, str]:
    """The metadata properties of the ONNX file ``path`` (what ``onnx.load(path).metadata_props`` holds), read
    without the graph: its bytes are skipped, so a file of hundreds of MB is read in milliseconds.

    Raises:
        ValueError: the file is no ONNX model (not a protobuf message).
    """
    metadata = {}
    with open(path, 'rb') as f:
        for entry in _fields(f, _ONNX_MODEL_METADATA):
            key, value = (b''.join(_fields(io.BytesIO(entry), number)).decode() for number in (1, 2))
            metadata[key] = value
    return metadata


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError as e:
        raise ExportUnavailableError(f'this export format needs {module} ({e}): {_INSTALL_HINT}.') from e


@option_ranges(opset_version=ONNX_OPSETS)
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
        opset_version: ONNX opset (:data:`ONNX_OPSETS`); default the exporter's.

    Raises:
        ConfigError: unknown format, or an opset outside :data:`ONNX_OPSETS`.
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
    with quiet_onnx():
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

        options = onnxruntime.SessionOptions()
        options.log_severity_level = ONNX_RUNTIME_ERRORS_ONLY
        session = onnxruntime.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])

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
        gap = float(np.abs(actual - expected).max()) if actual.size else 0.
        difference = max(difference, gap if np.isfinite(gap) else float('inf'))  # max() would drop a NaN
    return difference


@option_ranges(atol=Range(0), opset_version=ONNX_OPSETS)
def export_checked(
        model: nn.Module,
        out: Path,
        export_format: str,
        atol: float = 1e-4,
        check: bool = True,
        opset_version: Optional[int] = None,
) -> Tuple[Path, Optional[float]]:
    """Export ``model`` to ``out`` and check the file against the eager model before it replaces ``out``.

    The file is written beside ``out`` and moved there only when its logits are within ``atol`` of the eager
    model's (and finite), so a failed export or check leaves whatever was at ``out`` untouched.

    Returns:
        The path written, and the largest difference measured (None when ``check`` is off).

    Raises:
        ConfigError: ``atol`` or ``opset_version`` out of range, or ``out`` cannot be written (checked first).
    """
    out = check_output_path(out, '--out')
    difference = None

    def export_and_check(staging: str) -> None:
        nonlocal difference
        export_model(model, Path(staging), export_format, opset_version=opset_version)
        difference = check_export(model, Path(staging), export_format) if check else None
        if difference is not None and not difference <= atol:
            raise FerError(f'the exported model differs from the eager one by {difference:.2e} > --atol {atol}; '
                           f'{out} was not written.')

    write_atomic(str(out), export_and_check)
    return out, difference
