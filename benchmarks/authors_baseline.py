"""TransFER on the authors' released code path, as the speed baseline: same weights and shapes, slower kernels.

The released code drops attention maps and heads with a Python loop over the batch and computes attention
unfused (``softmax(q @ k^T) @ v``); it runs in fp32 on contiguous tensors. These modules reproduce that path and
are swapped into a ``transfer_fer_ir50`` so both share one set of weights.
"""
import random
from typing import Optional

import torch
from torch import nn

from timm_fer.layers import MultiHeadSelfAttentionDropping
from timm_fer.models import TransFER


def loop_drop_mask(batch_size: int, num_branches: int, p: float, device: torch.device) -> torch.Tensor:
    """A (batch, branches) keep-mask built one sample at a time, as the released code does."""
    mask = torch.ones(batch_size, num_branches)
    for i in range(batch_size):
        if random.random() < p:
            mask[i, random.randrange(num_branches)] = 0.
    return mask.to(device)


class LoopMultiAttentionDropping(nn.Module):
    """MAD with a Python loop over the batch."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.:
            return x
        mask = loop_drop_mask(x.shape[0], x.shape[1], self.p, x.device)
        return x * mask.view(*mask.shape, *([1] * (x.dim() - 2)))


class UnfusedLoopAttention(nn.Module):
    """Multi-head self-attention with unfused softmax attention and per-sample head dropping in a Python loop."""

    def __init__(self, attn: MultiHeadSelfAttentionDropping) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.p = attn.num_heads, attn.head_dim, attn.attn_head_drop.drop_prob
        self.scale = self.head_dim ** -0.5
        self.qkv, self.proj = attn.qkv, attn.proj

    def forward(
            self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False,
    ) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError('the authors\' attention takes no mask.')
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        x = attn @ v
        if self.training and self.p > 0.:
            x = x * loop_drop_mask(batch, self.num_heads, self.p, x.device)[:, :, None, None]
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, dim))


def to_authors_code_path(model: TransFER) -> TransFER:
    """Swap the authors' MAD and attention into ``model`` in place, sharing its weights."""
    if not isinstance(model.local_cnn, nn.Identity):
        model.local_cnn.branch_drop = LoopMultiAttentionDropping(model.local_cnn.branch_drop.drop_prob)
    for block in model.blocks:
        block.attn = UnfusedLoopAttention(block.attn)
    return model
