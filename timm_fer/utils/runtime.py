"""The fast path of timm-fer's commands: channels-last memory, bf16 autocast, threads, torch.compile.

Commands apply them with :func:`prepare_model` and :func:`autocast`; the defaults pick the fastest path that the
kernels torch will actually run support (:func:`cpu_capability`, not only the CPU's flags), and each part can be
turned off.
"""
import os
import time
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import ContextManager, Iterator, List, Optional

import torch
from torch import nn

from ..constants import AMP_CHOICES
from ..errors import ConfigError

__all__ = ['AMP_CHOICES', 'autocast', 'bf16_is_fast', 'busy_cores', 'cpu_capability', 'cpu_flags', 'cpu_times',
           'num_threads', 'parse_device', 'prepare_model', 'resolve_amp_dtype', 'resolve_threads', 'to_input']

CPU_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16', 'amx_tile')
"""The CPU flags that decide the fast path, as /proc/cpuinfo names them."""


def parse_device(device: str) -> torch.device:
    """``device`` (e.g. 'cpu', 'cuda', 'cuda:1') as a torch device.

    Raises:
        ConfigError: torch knows no such device.
    """
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f'--device {device} is not a device: use cpu, cuda or cuda:N.') from e


@lru_cache(maxsize=None)
def cpu_flags() -> List[str]:
    """Which of :data:`CPU_FLAGS` the CPU has (from /proc/cpuinfo; none where it is missing)."""
    cpuinfo = Path('/proc/cpuinfo')
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    return [flag for flag in CPU_FLAGS if flag in flags]


def _cpu_has_bf16_instructions() -> bool:
    return bool(set(cpu_flags()) & {'avx512_bf16', 'amx_bf16'})


def cpu_capability() -> str:
    """The vector instructions torch's CPU kernels run with: 'AVX512', 'AVX2', 'DEFAULT', ... (lowered by
    ``ATEN_CPU_CAPABILITY``)."""
    return torch.backends.cpu.get_cpu_capability()


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 autocast speeds ``device`` up: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX whose
    AVX512 kernels torch runs (with only AVX2 kernels, bf16 falls back to reference code, many times slower)."""
    if device.type == 'cuda':
        return torch.cuda.is_bf16_supported()
    return device.type == 'cpu' and _cpu_has_bf16_instructions() and cpu_capability().startswith('AVX512')


def resolve_amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for an ``--amp`` choice: 'auto' (bf16 where it is fast), 'bf16' or 'none' (fp32).

    Raises:
        ConfigError: ``amp`` is not one of :data:`AMP_CHOICES`.
    """
    if amp not in AMP_CHOICES:
        raise ConfigError(f"--amp is one of {', '.join(AMP_CHOICES)}, got {amp!r}.")
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


def cpu_times() -> List[List[int]]:
    """Per-core [busy, total] jiffies (clock ticks) from /proc/stat; idle and iowait are not busy."""
    times = []
    for line in Path('/proc/stat').read_text().splitlines():
        name, *values = line.split()
        if name.startswith('cpu') and name != 'cpu':
            counts = [int(v) for v in values[:8]]
            idle = counts[3] + counts[4]  # idle and iowait
            times.append([sum(counts) - idle, sum(counts)])
    return times


def busy_cores(window_s: float = 0.05) -> int:
    """How many of the cores this process may run on were busy (over half the time) during ``window_s`` seconds;
    0 where /proc/stat is missing."""
    if not Path('/proc/stat').exists():
        return 0
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None
    before = cpu_times()
    time.sleep(window_s)
    after = cpu_times()
    cores = range(len(after)) if allowed is None else [c for c in allowed if c < len(after)]
    return sum(1 for c in cores
               if after[c][1] > before[c][1]
               and (after[c][0] - before[c][0]) / (after[c][1] - before[c][1]) > 0.5)


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def resolve_threads(threads: Optional[int], device: torch.device) -> int:
    """Intra-op threads for inference: ``threads`` when given, else one per core that no other process keeps busy.

    Threads that share a core with a busy process make every parallel region wait for the slowest one: with 2
    threads on 2 cores, one of them busy elsewhere, the compact model ran about 2x slower than with 1 thread
    (README, "Fast by default"). GPU runs keep torch's setting.
    """
    if threads is not None:
        if threads < 1:
            raise ConfigError(f'--threads must be at least 1, got {threads}.')
        return threads
    if device.type != 'cpu':
        return torch.get_num_threads()
    return max(1, min(torch.get_num_threads(), _usable_cores() - busy_cores()))


@contextmanager
def num_threads(threads: int) -> Iterator[None]:
    """Run torch's CPU ops with ``threads`` intra-op threads inside the block, and restore the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
