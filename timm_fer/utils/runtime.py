"""The fast path of timm-fer's commands: channels-last memory, bf16 autocast and torch.compile where they pay off.

Commands apply them with :func:`prepare_model` and :func:`autocast`; the defaults pick the fastest path the device
supports, and each part can be turned off.
"""
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import ContextManager, Optional

import torch
from torch import nn

__all__ = ['autocast', 'bf16_is_fast', 'prepare_model', 'resolve_amp_dtype', 'to_input']


@lru_cache(maxsize=None)
def _cpu_has_bf16_instructions() -> bool:
    cpuinfo = Path('/proc/cpuinfo')
    if not cpuinfo.exists():
        return False
    flags = set(cpuinfo.read_text().split())
    return bool(flags & {'avx512_bf16', 'amx_bf16'})


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 autocast speeds ``device`` up: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX."""
    if device.type == 'cuda':
        return torch.cuda.is_bf16_supported()
    return device.type == 'cpu' and _cpu_has_bf16_instructions()


def resolve_amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for an ``--amp`` choice: 'auto' (bf16 where it is fast), 'bf16' or 'none' (fp32)."""
    if amp == 'auto':
        return torch.bfloat16 if bf16_is_fast(device) else None
    return {'bf16': torch.bfloat16, 'none': None}[amp]


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op context when ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def prepare_model(model: nn.Module, device: torch.device, channels_last: bool = True,
                  compile_model: bool = False) -> nn.Module:
    """Move ``model`` to ``device``, in channels-last memory if asked, compiled with ``torch.compile`` if asked."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile_model else model


def to_input(images: torch.Tensor, device: torch.device, channels_last: bool = True) -> torch.Tensor:
    """Move a batch of images to ``device`` in the memory format the model runs in."""
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images
