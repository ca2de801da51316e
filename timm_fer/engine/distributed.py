"""Process setup for ``torchrun``: torch.distributed from its environment variables, and the few collectives used."""
import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist

from ..errors import ConfigError
from ..utils.runtime import parse_device

__all__ = ['DistributedEnv', 'all_gather_objects', 'all_reduce_sum', 'broadcast_buffers', 'cleanup_distributed',
           'init_distributed']


@dataclass(frozen=True)
class DistributedEnv:
    """Where this process runs: its rank among ``world_size`` processes and its device."""
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """This process prints, shows progress and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = 'auto') -> DistributedEnv:
    """Pick the device and, when ``torchrun`` started several processes (WORLD_SIZE > 1), join their process group.

    Args:
        device: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' (this process's local rank) or 'cuda:N'.
    """
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    torch_device = parse_device(device)
    if torch_device.type == 'cuda':
        if not torch.cuda.is_available():
            raise ConfigError(f'--device {device} asks for CUDA, which this machine lacks; use --device cpu.')
        torch_device = torch.device('cuda', local_rank if torch_device.index is None else torch_device.index)
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        backend = 'nccl' if torch_device.type == 'cuda' else 'gloo'
        dist.init_process_group(backend, device_id=torch_device if torch_device.type == 'cuda' else None)
    return DistributedEnv(rank, world_size, local_rank, torch_device)


def cleanup_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place; returns it."""
    if _active():
        dist.all_reduce(tensor)
    return tensor


def all_gather_objects(obj: Any) -> List[Any]:
    """The ``obj`` of every process, in rank order."""
    if not _active():
        return [obj]
    gathered: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics), so that evaluation shards see the same model."""
    if _active():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
