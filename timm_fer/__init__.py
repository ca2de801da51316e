"""timm-fer: facial expression recognition for the timm ecosystem.

Importing ``timm_fer`` registers its models with timm, so ``timm.create_model('transfer_fer_ir50')`` works.
"""
from . import layers, models
from .complexity import count_macs, count_params
from .constants import AFFECTNET7_LABELS, AFFECTNET8_LABELS, FERPLUS_LABELS, RAFDB_LABELS
from .layers import LANet, LocalCNN, MultiAttentionDropping, MultiHeadSelfAttentionDropping, apply_msad
from .models import IRNet, TransFER
from .predict import predict

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
    'models',
    'predict',
]
