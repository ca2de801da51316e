"""LANet: a light spatial attention network that locates one discriminative facial region.

From "Facial Expression Recognition in the Wild via Deep Attentive Center Loss" (Farzaneh & Qi, 2021), used
as the branch of TransFER's local CNNs.
"""
from typing import Optional, Type

import torch
from torch import nn


class LANet(nn.Module):
    """Predict a single-channel spatial attention map in (0, 1) from a feature map.

    Layout: conv1x1 (C -> C/r, bias) -> BN -> act -> conv1x1 (C/r -> 1, bias) -> BN -> sigmoid.

    Args:
        in_chs: Channels of the input feature map.
        reduction: Channel reduction ratio r of the hidden layer.
        act_layer: Activation of the hidden layer.
    """

    def __init__(
            self,
            in_chs: int,
            reduction: int = 16,
            act_layer: Type[nn.Module] = nn.ReLU,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        if reduction < 1 or in_chs < reduction:
            raise ValueError(
                f'LANet needs 1 <= reduction <= in_chs, got in_chs={in_chs}, reduction={reduction}; '
                f'lower the reduction.')
        dd = {'device': device, 'dtype': dtype}
        hidden_chs = in_chs // reduction
        self.conv1 = nn.Conv2d(in_chs, hidden_chs, kernel_size=1, **dd)
        self.bn1 = nn.BatchNorm2d(hidden_chs, **dd)
        self.act = act_layer(inplace=True)
        self.conv2 = nn.Conv2d(hidden_chs, 1, kernel_size=1, **dd)
        self.bn2 = nn.BatchNorm2d(1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the attention map, shape (N, 1, H, W), for a feature map of shape (N, C, H, W)."""
        x = self.act(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(x)).sigmoid()
