"""Where :func:`~timm_fer.inference.predict.predict` runs the model: torch, or ONNX Runtime on the CPU.

``auto`` picks per CPU class (README, "Fast by default"): where bf16 runs fast (AVX512-BF16 or AMX kernels, CUDA),
torch under bf16 autocast is the fastest; elsewhere, in fp32 on the CPU, ONNX Runtime with its graph optimisations
is. The ONNX file is exported once per model and weights (:func:`~timm_fer.inference.export.export_checked`, with
its parity check against the eager model) and cached under :func:`onnx_cache_dir`: written atomically with a
SHA-256 beside it, checked on every read, and exported again when damaged (a full disk or a kill can cut a file).
Before a cached file is used, the metadata inside it (:func:`~timm_fer.inference.export.export_metadata`: model,
labels, input size, preprocessing, the weights' digest) must be the request's: a file swapped for another model's
(its SHA-256 rewritten to match) is exported again, and said so.
``int8`` quantises the Linear layers (the encoder's and the head's) dynamically to int8: torch's dynamic
quantisation, or ONNX Runtime's on the graph's MatMuls; faster, but no longer equal to fp32 (the README gives the
top-1 agreement).
"""
import hashlib
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from ..constants import BACKENDS
from ..errors import ConfigError, ExportUnavailableError
from ..utils.atomic import write_atomic, write_text_atomic
from .export import (
    METADATA_KEY,
    ONNX_RUNTIME_ERRORS_ONLY,
    export_checked,
    export_metadata,
    quiet_onnx,
    read_onnx_metadata,
    weights_digest,
)

__all__ = ['BACKENDS', 'OnnxRuntimeModel', 'cache_dir_problem', 'cached_file_problem', 'cached_onnx',
           'metadata_mismatch', 'note', 'onnx_cache_dir', 'quantize_linear', 'resolve_backend', 'weights_digest']

_INSTALL_HINT = 'pip install "timm-fer[export]" (onnxruntime, onnx and onnxscript)'


def note(message: str) -> None:
    """Print ``message`` as a 'note:' line on standard error: how a run says what it did other than asked."""
    print(f'note: {message}', file=sys.stderr)


def _onnxruntime_installed() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: torch.device, amp_dtype: Optional[torch.dtype], cacheable: bool,
                    eager_only: bool) -> str:
    """The backend for a ``--backend`` choice.

    Args:
        backend: 'auto', 'torch' or 'onnxruntime'.
        device: Where the model runs.
        amp_dtype: The autocast dtype :func:`~timm_fer.utils.runtime.resolve_amp_dtype` chose.
        cacheable: The model was loaded by name with real weights, so its exported file is worth caching (a model
            passed in, or random weights, would be exported again on every run).
        eager_only: Something needs the eager model (explanations, ``torch.compile``).

    Raises:
        ConfigError: 'onnxruntime' with a GPU, with bf16 autocast (``--amp auto`` gives none with it: see
            :func:`~timm_fer.inference.classifier.load_classifier`), or with something that needs the eager model.
        ExportUnavailableError: 'onnxruntime' without onnxruntime installed; the message says how to install it.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{backend}'; choose from {', '.join(BACKENDS)}.")
    if backend == 'auto':
        fp32_cpu = device.type == 'cpu' and amp_dtype is None
        return 'onnxruntime' if fp32_cpu and cacheable and not eager_only and _onnxruntime_installed() else 'torch'
    if backend == 'onnxruntime':
        if device.type != 'cpu':
            raise ConfigError(f'the onnxruntime backend runs on the CPU, not on {device}; use --backend torch.')
        if amp_dtype is not None:
            raise ConfigError('the onnxruntime backend runs in fp32: use --amp none (or auto) with it.')
        if eager_only:
            raise ConfigError('--save-viz and --compile need the eager model: use --backend torch with them.')
        if not _onnxruntime_installed():
            raise ExportUnavailableError(f'the onnxruntime backend needs onnxruntime and onnxscript: {_INSTALL_HINT}.')
    return backend


def onnx_cache_dir() -> Path:
    """Folder of the exported files: ``$TIMM_FER_CACHE/onnx``, else ``$XDG_CACHE_HOME/timm_fer/onnx``, else
    ``~/.cache/timm_fer/onnx``."""
    if os.environ.get('TIMM_FER_CACHE'):
        return Path(os.environ['TIMM_FER_CACHE']) / 'onnx'
    return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'timm_fer' / 'onnx'


def cache_dir_problem(folder: Path) -> Optional[str]:
    """Why the exported files cannot be kept in ``folder`` (created if missing), or None when they can: it is a
    file, cannot be created (``TIMM_FER_CACHE=/proc/x``) or cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return f'{type(e).__name__}: {e.strerror or e}'
    return None


def _digest_file(path: Path) -> Path:
    """Where the SHA-256 of the cached file ``path`` is kept: beside it, ``.sha256`` added to its name."""
    return path.with_name(f'{path.name}.sha256')


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def cached_file_problem(path: Path) -> Optional[str]:
    """Why the cached ONNX file ``path`` is damaged, or None when it is sound.

    A file is sound when its SHA-256 is the one written beside it when it was cached. A file without one (cached by
    an older timm-fer, or by a run killed between the two writes) is sound when ONNX Runtime loads it; its SHA-256 is
    then written.
    """
    digest_file = _digest_file(path)
    if digest_file.is_file():
        if _sha256(path) == digest_file.read_text(encoding='utf-8').strip():
            return None
        return 'its SHA-256 is not the one written when it was cached'
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.log_severity_level = ONNX_RUNTIME_ERRORS_ONLY
    try:
        onnxruntime.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    except Exception as e:  # onnxruntime's errors (InvalidProtobuf, Fail, InvalidGraph) share no base but Exception
        return f'ONNX Runtime cannot load it: {type(e).__name__}'
    write_text_atomic(str(digest_file), _sha256(path))
    return None


def metadata_mismatch(path: Path, expected: Dict[str, Any]) -> Optional[str]:
    """How the metadata inside the ONNX file ``path`` differs from ``expected`` (what the request would export), or
    None when it is the same. A file that is no ONNX model at all is left to its SHA-256 and ONNX Runtime to refuse.
    """
    try:
        metadata = read_onnx_metadata(path)
    except (OSError, ValueError):
        return None
    if METADATA_KEY not in metadata:
        return f'it has no {METADATA_KEY} metadata'
    try:
        stored = json.loads(metadata[METADATA_KEY])
    except ValueError:
        return f'its {METADATA_KEY} metadata is not JSON'
    wanted = json.loads(json.dumps(expected))  # as the file would hold it: lists, not tuples
    if not isinstance(stored, dict):
        return f'its {METADATA_KEY} metadata is not a JSON object'
    differing = sorted(key for key in wanted.keys() | stored.keys() if wanted.get(key) != stored.get(key))
    if not differing:
        return None
    shown = ', '.join(f'{key} {stored.get(key)!r}, not {wanted.get(key)!r}' for key in differing
                      if key in ('model', 'weights_digest', 'input_size'))
    return f'its metadata differs in {", ".join(differing)}' + (f': {shown}' if shown else '')


def _cache(path: Path, write: Callable[[], object], again: str, log: Callable[[str], None],
           expected: Optional[Dict[str, Any]] = None) -> None:
    """Make ``path`` a sound cached file: kept when :func:`cached_file_problem` finds none and its metadata is
    ``expected`` (:func:`metadata_mismatch`), else (missing, damaged or another model's) written by ``write()``
    (which moves a whole file into place, or none) with its SHA-256 beside it."""
    if path.exists():
        problem = cached_file_problem(path)
        mismatch = metadata_mismatch(path, expected) if problem is None and expected is not None else None
        if problem is None and mismatch is None:
            return
        if problem is not None:
            log(f'the cached ONNX file {path} was damaged ({problem}), {again}')
        else:
            log(f'the cached ONNX file {path} is not the one this run asks for ({mismatch}), {again}')
    _digest_file(path).unlink(missing_ok=True)  # a digest of an older file never vouches for the new one
    write()
    write_text_atomic(str(_digest_file(path)), _sha256(path))


def cached_onnx(model: nn.Module, name: str, int8: bool = False, cache_dir: Optional[Path] = None,
                log: Callable[[str], None] = note) -> Path:
    """The ONNX file of ``model`` (fp32, or with int8 MatMuls), exported and checked the first time only.

    Each file is written atomically (a run killed or a disk filled while it is written leaves no file) with its
    SHA-256 beside it, and checked against it on every later call, and its embedded metadata against the request
    (model, labels, input size, preprocessing, :func:`weights_digest`): a damaged file, or another model's, is made
    again, and ``log`` says so.

    Args:
        model: The eager fp32 model, on the CPU.
        name: Model name, part of the file name.
        int8: Quantise the graph's MatMuls (the Linear layers) dynamically to int8 with ONNX Runtime.
        cache_dir: Where the files live; default :func:`onnx_cache_dir`.
        log: Says when a damaged file, or another model's, was made again (default: a 'note:' line on standard
            error).
    """
    folder = Path(cache_dir) if cache_dir is not None else onnx_cache_dir()
    digest = weights_digest(model)
    stem = f"{name.replace('/', '_')}-{digest}"
    path = folder / f'{stem}.onnx'
    expected = export_metadata(model, digest)  # what the exported file holds; the quantiser keeps it
    # export_checked writes beside the file and moves it into place once it matches the eager model
    _cache(path, lambda: export_checked(model.cpu().eval(), path, 'onnx'), 'exported again', log, expected)
    if not int8:
        return path
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def quantize(staging: str) -> None:
        with quiet_onnx():
            quantize_dynamic(path, staging, op_types_to_quantize=['MatMul'], weight_type=QuantType.QInt8)

    quantized = folder / f'{stem}-int8.onnx'
    _cache(quantized, lambda: write_atomic(str(quantized), quantize), 'quantised again', log, expected)
    return quantized


class OnnxRuntimeModel:
    """An exported model in an ONNX Runtime session (all graph optimisations on), called like the torch model.

    Args:
        path: The ONNX file.
        threads: Intra-op threads of the session.
    """

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = ONNX_RUNTIME_ERRORS_ONLY
        self.path = Path(path)
        self.threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of normalised faces."""
        faces = images.detach().cpu().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: faces})[0])


def quantize_linear(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose Linear layers run in int8 (torch's dynamic quantisation; CPU only)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torch.ao.quantization's deprecation notices
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=False)
