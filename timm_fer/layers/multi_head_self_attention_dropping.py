"""Multi-head Self-Attention Dropping (MSAD): multi-head self-attention that drops whole heads in training.

TransFER (section 3.3) applies Multi-Attention Dropping across the heads of every self-attention block: per
sample and per block, with probability p2, the output of one uniformly chosen head is zeroed before the output
projection, so the heads are pushed to learn complementary relations.

Like timm's ``Attention``, the module computes the attention with the fused kernel
(``F.scaled_dot_product_attention``) or explicitly, by its ``fused_attn`` switch. The explicit path passes the
attention probabilities through the ``attn_drop`` module, so forward hooks on ``*.attn_drop`` (timm's
``AttentionExtract`` convention) and FX nodes ``*.attn.softmax`` see them.
"""
from typing import Final, Optional, Type

import torch
import torch.nn.functional as F
from timm.layers import Attention, maybe_add_mask, resolve_self_attn_mask, use_fused_attn
from torch import nn

from ..utils.deprecation import renamed_kwarg
from .multi_attention_dropping import MultiAttentionDropping


class MultiHeadSelfAttentionDropping(nn.Module):
    """timm-compatible multi-head self-attention with MSAD head dropping, fused or explicit.

    Parameter names match timm's ``Attention`` (``qkv``, ``q_norm``, ``k_norm``, ``norm``, ``proj``), so its
    weights load unchanged; in eval it computes exactly what ``Attention`` does.

    The ``fused_attn`` attribute chooses the attention computation, as in timm's ``Attention``: it starts as
    ``timm.layers.use_fused_attn()`` (``TIMM_FUSED_ATTN=0`` turns it off) and can be set per instance. When False,
    ``softmax(q k^T * scale)`` is computed explicitly and passed through ``attn_drop`` before it weights the
    values; both paths give the same outputs up to rounding and drop the same heads for the same random state
    (they differ only in how ``attn_drop`` > 0 draws its dropout mask).

    Args:
        dim: Token embedding dimension.
        num_heads: Number of attention heads.
        attn_head_dim: Dimension of each head; ``dim // num_heads`` when None.
        dim_out: Output dimension; ``dim`` when None.
        qkv_bias: Add a bias to the qkv projection.
        qk_norm: Normalise queries and keys with ``norm_layer``.
        scale_norm: Normalise the attention output with ``norm_layer`` before the projection.
        proj_bias: Add a bias to the output projection.
        attn_drop: Dropout on the attention weights.
        proj_drop: Dropout after the output projection.
        norm_layer: Normalisation layer for ``qk_norm`` and ``scale_norm``.
        attn_head_drop_prob: MSAD probability p2 that a sample has one attention head dropped in training.
        head_drop_prob: Former name of ``attn_head_drop_prob`` (deprecated).

    Attributes:
        attn_head_drop: The :class:`MultiAttentionDropping` over the heads' outputs (not timm's ``head_drop``,
            the dropout before a classifier).
    """
    fused_attn: Final[bool]

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            attn_head_dim: Optional[int] = None,
            dim_out: Optional[int] = None,
            qkv_bias: bool = False,
            qk_norm: bool = False,
            scale_norm: bool = False,
            proj_bias: bool = True,
            attn_drop: float = 0.,
            proj_drop: float = 0.,
            norm_layer: Optional[Type[nn.Module]] = None,
            attn_head_drop_prob: float = 0.,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            head_drop_prob: Optional[float] = None,
    ) -> None:
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        attn_head_drop_prob = renamed_kwarg(
            'head_drop_prob', head_drop_prob, 'attn_head_drop_prob', attn_head_drop_prob)
        if attn_head_dim is None:
            if dim % num_heads:
                raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads}), or set attn_head_dim.')
            attn_head_dim = dim // num_heads
        if (qk_norm or scale_norm) and norm_layer is None:
            raise ValueError('qk_norm and scale_norm need a norm_layer, e.g. norm_layer=nn.LayerNorm.')
        self.num_heads = num_heads
        self.head_dim = attn_head_dim
        self.attn_dim = num_heads * attn_head_dim
        self.scale = attn_head_dim ** -0.5
        self.fused_attn = use_fused_attn()

        self.qkv = nn.Linear(dim, self.attn_dim * 3, bias=qkv_bias, **dd)
        self.q_norm = norm_layer(attn_head_dim, **dd) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(attn_head_dim, **dd) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.attn_head_drop = MultiAttentionDropping(attn_head_drop_prob, dim=1)
        self.norm = norm_layer(self.attn_dim, **dd) if scale_norm else nn.Identity()
        self.proj = nn.Linear(self.attn_dim, dim_out or dim, bias=proj_bias, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    @classmethod
    def from_attention(cls, attn: Attention, attn_head_drop_prob: float) -> 'MultiHeadSelfAttentionDropping':
        """Wrap the submodules of a timm ``Attention`` (shared, not copied) into an MSAD attention.

        The MSAD attention takes over the ``fused_attn`` setting of ``attn``.
        """
        if getattr(attn, 'gate', None) is not None:
            raise ValueError('gated timm Attention (gated=True) is not supported by MSAD.')
        msad = cls(
            attn.qkv.in_features,
            num_heads=attn.num_heads,
            attn_head_dim=attn.head_dim,
            dim_out=attn.proj.out_features,
            attn_head_drop_prob=attn_head_drop_prob,
            device='meta',
        )
        for name in ('qkv', 'q_norm', 'k_norm', 'attn_drop', 'norm', 'proj', 'proj_drop'):
            setattr(msad, name, getattr(attn, name, nn.Identity()))
        msad.fused_attn = attn.fused_attn
        return msad.train(attn.training)

    def forward(
            self,
            x: torch.Tensor,
            attn_mask: Optional[torch.Tensor] = None,
            is_causal: bool = False,
    ) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(
                q, k, v,
                attn_mask=attn_mask,
                dropout_p=self.attn_drop.p if self.training else 0.,
                is_causal=is_causal,
            )
        else:
            q = q * self.scale
            attn = q @ k.transpose(-2, -1)
            attn = maybe_add_mask(attn, resolve_self_attn_mask(N, attn, attn_mask, is_causal))
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)  # forward hooks on attn_drop see the attention probabilities
            x = attn @ v
        x = self.attn_head_drop(x)  # (B, heads, N, head_dim): MAD across the heads axis
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.proj(self.norm(x))
        return self.proj_drop(x)


def apply_msad(model: nn.Module, drop_prob: Optional[float] = None, *, p: Optional[float] = None) -> nn.Module:
    """Turn a timm ViT-family model into its MSAD version in place, keeping its weights.

    Every timm ``Attention`` module is replaced by a :class:`MultiHeadSelfAttentionDropping` that shares its
    parameters; modules that already are MSAD attention get their drop probability set to ``drop_prob``. Eval
    outputs are unchanged.

    Args:
        model: A model built from timm's ``Attention`` (``vit_*``, ``deit_*``, ...), or any module holding them.
        drop_prob: MSAD probability p2 that a sample has one head dropped in each block in training.
        p: Former name of ``drop_prob`` (deprecated).

    Returns:
        The same ``model``, for chaining.
    """
    drop_prob = renamed_kwarg('p', p, 'drop_prob', drop_prob)
    if drop_prob is None:
        raise TypeError('apply_msad() needs drop_prob, the MSAD probability p2, e.g. apply_msad(model, drop_prob=0.3).')
    msad = MultiAttentionDropping(drop_prob)  # validates drop_prob before anything is replaced
    targets = [
        (name, module) for name, module in model.named_modules()
        if type(module) is Attention or isinstance(module, MultiHeadSelfAttentionDropping)]
    if not targets:
        raise ValueError(
            f'apply_msad found no timm Attention module in {type(model).__name__}; it supports models whose '
            f'self-attention is timm.layers.Attention (vit_*, deit_*, ...).')
    for name, module in targets:
        if isinstance(module, MultiHeadSelfAttentionDropping):
            module.attn_head_drop.drop_prob = msad.drop_prob
            continue
        parent_name, _, child_name = name.rpartition('.')
        parent = model.get_submodule(parent_name)
        setattr(parent, child_name, MultiHeadSelfAttentionDropping.from_attention(module, msad.drop_prob))
    return model
