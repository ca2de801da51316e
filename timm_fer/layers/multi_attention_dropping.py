"""Multi-Attention Dropping (MAD), the branch-dropping regulariser of TransFER (Xue et al., ICCV 2021).

MAD takes a group of B branches (attention maps, attention heads, ...) held on one axis of a tensor and, in
training, for every sample independently, with probability ``drop_prob`` sets one uniformly chosen branch entirely to
zero. Unlike dropout it never rescales what is kept, and it is the identity in eval.
"""
from typing import Optional

import torch
from timm.layers import register_notrace_module
from torch import nn

from ..utils.deprecation import renamed_kwarg


def _check_drop_prob(drop_prob: float) -> float:
    if not 0. <= drop_prob <= 1.:
        raise ValueError(f'drop probability must lie in [0, 1], got {drop_prob}; pass e.g. drop_prob=0.6 (0 disables '
                         f'dropping).')
    return float(drop_prob)


def multi_attention_dropping(
        x: torch.Tensor,
        drop_prob: float = 0.5,
        dim: int = 1,
        training: bool = False,
        *,
        p: Optional[float] = None,
) -> torch.Tensor:
    """Zero one uniformly chosen branch per sample with probability ``drop_prob``, in training only.

    The random draws stay on ``x``'s device: no host-device synchronisation and no loop over the batch.

    Args:
        x: Tensor whose axis 0 is the batch and whose axis ``dim`` holds the branches.
        drop_prob: Probability that a sample has one branch dropped.
        dim: Branch axis (negative values count from the end); must not be the batch axis.
        training: Drop only when True; otherwise ``x`` is returned as it is.
        p: Former name of ``drop_prob`` (deprecated).

    Returns:
        A tensor of ``x``'s shape and dtype. Dropped branches are exact zeros and pass no gradient back.
    """
    return _drop_branches(x, renamed_kwarg('p', p, 'drop_prob', drop_prob), dim, training)


def _drop_branches(x: torch.Tensor, drop_prob: float, dim: int, training: bool) -> torch.Tensor:
    """:func:`multi_attention_dropping` without the former keyword, so that TorchScript compiles it."""
    drop_prob = _check_drop_prob(drop_prob)
    if not training or drop_prob == 0.:
        return x
    ndim = x.dim()
    branch_dim = dim + ndim if dim < 0 else dim
    if branch_dim <= 0 or branch_dim >= ndim:
        raise ValueError(
            f'branch axis dim={dim} must be a non-batch axis of a tensor with {ndim} dims; '
            f'choose an axis in [1, {ndim - 1}] (axis 0 is the batch).')
    num_branches = x.shape[branch_dim]
    if num_branches < 2:
        raise ValueError(
            f'multi-attention dropping needs at least 2 branches on axis {dim}, got {num_branches}; '
            f'use drop_prob=0 for a single branch.')
    batch_size = x.shape[0]
    drop_sample = torch.rand(batch_size, 1, device=x.device) < drop_prob
    dropped_branch = torch.randint(num_branches, (batch_size, 1), device=x.device)
    branch_ids = torch.arange(num_branches, device=x.device).unsqueeze(0)
    drop_mask = drop_sample & (branch_ids == dropped_branch)
    mask_shape = [1] * ndim
    mask_shape[0] = batch_size
    mask_shape[branch_dim] = num_branches
    return x.masked_fill(drop_mask.view(mask_shape), 0.)


@register_notrace_module  # a leaf for FX: its checks depend on the input's shape
class MultiAttentionDropping(nn.Module):
    """Multi-Attention Dropping as a layer: in training, each sample loses one of its branches with some probability.

    For every sample independently, with probability ``drop_prob``, one uniformly chosen branch of axis ``dim`` is
    set to zero; what is kept is never rescaled, dropped branches pass no gradient, and in eval the layer is the
    identity. The function ``multi_attention_dropping`` does the same without a module.

    Args:
        drop_prob: Probability that a sample has one branch dropped in training.
        dim: Axis holding the branches (axis 0 is the batch).
        p: Former name of ``drop_prob`` (deprecated).
    """

    def __init__(self, drop_prob: float = 0.5, dim: int = 1, *, p: Optional[float] = None) -> None:
        super().__init__()
        self.drop_prob = _check_drop_prob(renamed_kwarg('p', p, 'drop_prob', drop_prob))
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _drop_branches(x, self.drop_prob, self.dim, self.training)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}, dim={self.dim}'
