"""Local CNNs of TransFER: several LANets guided by Multi-Attention Dropping."""
from typing import Optional, Tuple

import torch
from torch import nn

from .lanet import LANet
from .multi_attention_dropping import MultiAttentionDropping


class LocalCNN(nn.Module):
    """Re-weight a feature map by the element-wise max of B LANet attention maps, one of them dropped by MAD.

    In training, MAD zeroes one branch's map per sample with probability ``drop_prob``, which pushes the
    branches towards different facial regions (TransFER, section 3.1).

    Args:
        in_chs: Channels of the input feature map.
        num_branches: Number B of LANet branches.
        reduction: Channel reduction ratio of each LANet.
        drop_prob: MAD probability p1; needs ``num_branches >= 2`` when non-zero.

    Attributes:
        branch_drop: The :class:`MultiAttentionDropping` over the branch maps.
    """

    def __init__(
            self,
            in_chs: int,
            num_branches: int = 2,
            reduction: int = 16,
            drop_prob: float = 0.6,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        if num_branches < 1:
            raise ValueError(f'LocalCNN needs num_branches >= 1, got {num_branches}.')
        if num_branches == 1 and drop_prob > 0.:
            raise ValueError(
                f'multi-attention dropping needs at least 2 branches, got num_branches=1 with '
                f'drop_prob={drop_prob}; use drop_prob=0 or more branches.')
        self.branches = nn.ModuleList([
            LANet(in_chs, reduction=reduction, device=device, dtype=dtype) for _ in range(num_branches)])
        self.branch_drop = MultiAttentionDropping(drop_prob, dim=1)

    def forward_with_maps(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return the re-weighted features (N, C, H, W) and the branch maps after MAD (N, B, H, W)."""
        maps = torch.cat([branch(x) for branch in self.branches], dim=1)
        maps = self.branch_drop(maps)
        return x * maps.amax(dim=1, keepdim=True), maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_maps(x)[0]
