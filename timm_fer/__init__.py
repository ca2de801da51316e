"""timm-fer: facial expression recognition for the timm ecosystem.

Importing ``timm_fer`` registers its models with timm, so ``timm.create_model('transfer_fer_ir50')`` works. The
package is layered, each part importing only those before it: ``layers`` <- ``models`` <- ``hub`` (loading and
publishing weights) <- ``engine`` (training, evaluation) and ``inference`` (prediction, pictures, export) <- ``cli``.
``data``, ``faces``, ``utils``, ``errors`` and ``constants`` sit below them all.
"""
from typing import Any

from . import layers, models
from .constants import AFFECTNET7_LABELS, AFFECTNET8_LABELS, FERPLUS_LABELS, RAFDB_LABELS
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
]

_LAZY = {'predict': ('.inference.predict', 'predict'), 'load_model': ('.hub.loading', 'load_model'),
         'predict_video': ('.inference.video', 'predict_video')}
"""Public functions of the higher layers, imported on first use so that ``import timm_fer`` stays light."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'timm_fer' has no attribute '{name}'")
    from importlib import import_module
    module, attribute = _LAZY[name]
    return getattr(import_module(module, __name__), attribute)
