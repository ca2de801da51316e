"""Parameter and multiply-accumulate counts, as quoted in the README's model table."""
from typing import Any, Optional, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _cpu_sdpa_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch counts the CUDA fused-attention kernels but not the CPU one that F.scaled_dot_product_attention uses here.
_EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def first_conv_channels(model: nn.Module) -> Optional[int]:
    """Input channels of the conv that ``model.pretrained_cfg['first_conv']`` names, or None where there is none.

    timm keeps the pretrained cfg's ``input_size`` at three channels for a model made with ``in_chans=1``; its first
    conv has the channels the model takes.
    """
    try:
        return model.get_submodule(model.pretrained_cfg['first_conv']).in_channels
    except (KeyError, AttributeError):  # no first conv named in the cfg, or a wrapper without it
        return None


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: Optional[Tuple[int, int, int]] = None) -> int:
    """Multiply-accumulates of one eval forward pass of a single image, counted by ``torch.utils.flop_counter``.

    Args:
        model: A timm model; left in the train/eval mode it had.
        input_size: (C, H, W); when None, the model's ``pretrained_cfg['input_size']`` with the channels of its
            first conv (:func:`first_conv_channels`).
    """
    if input_size is None:
        channels, *size = model.pretrained_cfg['input_size']
        input_size = (first_conv_channels(model) or channels, *size)
    param = next(model.parameters())
    x = torch.zeros(1, *input_size, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
