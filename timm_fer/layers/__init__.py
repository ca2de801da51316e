"""Drop-in layers of timm-fer: MAD, LANet, local CNNs and MSAD attention."""
from .lanet import LANet
from .local_cnn import LocalCNN
from .multi_attention_dropping import MultiAttentionDropping, multi_attention_dropping
from .multi_head_self_attention_dropping import MultiHeadSelfAttentionDropping, apply_msad

__all__ = [
    'LANet',
    'LocalCNN',
    'MultiAttentionDropping',
    'MultiHeadSelfAttentionDropping',
    'apply_msad',
    'multi_attention_dropping',
]
