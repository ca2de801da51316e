"""timm-fer: facial expression recognition for the timm ecosystem.

Importing ``timm_fer`` registers its models with timm, so ``timm.create_model('transfer_fer_ir50')`` works. The
package is layered, each part importing only those before it: ``layers`` <- ``models`` <- ``hub`` (loading and
publishing weights) <- ``engine`` (training, evaluation) and ``inference`` (prediction, pictures, export) <- ``cli``.
``data``, ``faces``, ``utils``, ``errors`` and ``constants`` sit below them all.
"""
import sys
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, List

from .constants import AFFECTNET7_LABELS, AFFECTNET8_LABELS, FERPLUS_LABELS, RAFDB_LABELS

if TYPE_CHECKING:
    from . import layers, models
    from .inference.predict import predict
    from .inference.stream import stream
    from .inference.video import predict_video
    from .hub.loading import load_model
    from .layers import LANet, LocalCNN, MultiAttentionDropping, MultiHeadSelfAttentionDropping, apply_msad
    from .models import IRNet, TransFER
    from .utils import count_macs, count_params

__version__ = '0.1.0'

__all__ = [
    'AFFECTNET7_LABELS',
    'AFFECTNET8_LABELS',
    'FERPLUS_LABELS',
    'IRNet',
    'LANet',
    'LocalCNN',
    'MultiAttentionDropping',
    'MultiHeadSelfAttentionDropping',
    'RAFDB_LABELS',
    'TransFER',
    'apply_msad',
    'count_macs',
    'count_params',
    'layers',
    'load_model',
    'models',
    'predict',
    'predict_video',
    'stream',
]

_LAZY = {'predict': ('.inference.predict', 'predict'), 'load_model': ('.hub.loading', 'load_model'),
         'predict_video': ('.inference.video', 'predict_video'), 'stream': ('.inference.stream', 'stream'),
         'layers': ('.layers', None),
         'models': ('.models', None), 'count_macs': ('.utils', 'count_macs'),
         'count_params': ('.utils', 'count_params'),
         **{name: ('.layers', name) for name in ('LANet', 'LocalCNN', 'MultiAttentionDropping',
                                                 'MultiHeadSelfAttentionDropping', 'apply_msad')},
         **{name: ('.models', name) for name in ('IRNet', 'TransFER')}}
"""Where the public names live, imported on first use (the labels above need no torch)."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'timm_fer' has no attribute '{name}'")
    module, attribute = _LAZY[name]
    imported = import_module(module, __name__)
    return imported if attribute is None else getattr(imported, attribute)


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))


def _is_the_command_line() -> bool:
    """Whether this process is the ``timm-fer`` command (or ``python -m timm_fer``). It imports torch, timm and the
    models only in the sub-commands that use them, so that ``--help`` and argument errors answer at once."""
    orig_argv = getattr(sys, 'orig_argv', [])
    run_as_module = any(a == '-m' and b == __name__ for a, b in zip(orig_argv, orig_argv[1:]))
    return run_as_module or bool(sys.argv) and Path(sys.argv[0]).stem in ('timm-fer', 'timm-fer-script')


if not _is_the_command_line():
    import_module('.models', __name__)  # registers the models with timm
