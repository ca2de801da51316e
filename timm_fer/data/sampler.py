"""Epoch sampler of ``timm-fer train``: class-balanced up-sampling (every class drawn as often as the largest one) or
every image once, sharded over processes and resumable mid-epoch."""
import math
from typing import Dict, Iterator, Optional, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from .dataset import SampleKey

__all__ = ['ClassBalancedSampler']


class ClassBalancedSampler(Sampler[SampleKey]):
    """Each epoch draws every class ``max(class_counts)`` times, then shuffles; classes without images are left out.

    With ``balanced=False`` an epoch draws every image once instead (a plain shuffle, for overall accuracy on
    imbalanced data), with the same sharding, seeds and resumption.

    A class of ``n`` images drawn ``m`` times repeats all its images ``m // n`` times and adds ``m % n`` of them
    chosen at random, so an epoch sees every image and as evenly as possible. The order depends only on
    (seed, epoch). Under torch.distributed the epoch is padded (by repeating its start) to a multiple of the number
    of processes and rank ``r`` takes positions ``r, r + world, ...``: disjoint shards of equal length, whose union
    for a global batch is the batch a single process would draw.

    With ``sample_seeds`` the sampler yields (index, seed) pairs, one seed per drawn position, and ``FerDataset``
    runs that sample's augmentation from its seed: results then do not depend on loader workers or process count.

    Args:
        targets: Label of each dataset sample.
        num_replicas: Number of processes; by default the torch.distributed world size, 1 outside it.
        rank: Rank of this process; by default the torch.distributed rank, 0 outside it.
        seed: Seed of the shuffles, the same on every process.
        sample_seeds: Yield (index, seed) pairs instead of indices.
        balanced: Up-sample every class to the largest one; False draws every image once.
    """

    def __init__(
            self,
            targets: Sequence[int],
            num_replicas: Optional[int] = None,
            rank: Optional[int] = None,
            seed: int = 0,
            sample_seeds: bool = False,
            balanced: bool = True,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        self.num_replicas = num_replicas if num_replicas is not None else (
            dist.get_world_size() if distributed else 1)
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f'rank must be in [0, {self.num_replicas}), got {self.rank}.')
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        if self.targets.numel() == 0:
            raise ValueError('ClassBalancedSampler needs at least one sample.')
        self.class_counts = torch.bincount(self.targets)
        self.class_draws = torch.where(
            self.class_counts > 0, self.class_counts.max(), 0) if balanced else self.class_counts
        self.epoch_size = int(self.class_draws.sum())
        self.num_samples = math.ceil(self.epoch_size / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self.seed = seed
        self.sample_seeds = sample_seeds
        self.epoch = 0
        self.start_index = 0

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """(total_size, 2) tensor of (dataset index, sample seed) for every position of ``epoch``, before sharding."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        draws = []
        for label in torch.nonzero(self.class_counts).flatten().tolist():
            indices = torch.nonzero(self.targets == label).flatten()
            repeats, remainder = divmod(int(self.class_draws[label]), indices.numel())
            extra = indices[torch.randperm(indices.numel(), generator=generator)[:remainder]]
            draws.append(torch.cat([indices.repeat(repeats), extra]))
        order = torch.cat(draws)[torch.randperm(self.epoch_size, generator=generator)]
        seeds = torch.randint(0, 2 ** 62, (self.epoch_size,), generator=generator)
        order = torch.stack([order, seeds], dim=1)
        padding = self.total_size - self.epoch_size
        return torch.cat([order, order.repeat(math.ceil(padding / self.epoch_size), 1)[:padding]])

    def __iter__(self) -> Iterator[SampleKey]:
        shard = self.epoch_order(self.epoch)[self.rank::self.num_replicas][self.start_index:]
        for chunk in shard.split(4096):
            if self.sample_seeds:
                yield from map(tuple, chunk.tolist())
            else:
                yield from chunk[:, 0].tolist()

    def __len__(self) -> int:
        return self.num_samples - self.start_index

    def set_epoch(self, epoch: int) -> None:
        """Draw the order of ``epoch`` from its start on the next iteration."""
        self.epoch = epoch
        self.start_index = 0

    def state_dict(self, num_consumed: Optional[int] = None) -> Dict[str, int]:
        """State to resume the current epoch after ``num_consumed`` of this rank's samples (by default where the
        current iteration started)."""
        return {
            'seed': self.seed,
            'epoch': self.epoch,
            'start_index': self.start_index if num_consumed is None else num_consumed,
            'num_replicas': self.num_replicas,
            'epoch_size': self.epoch_size,
        }

    def load_state_dict(self, state: Dict[str, int]) -> None:
        """Resume from ``state_dict()``; the next iteration continues that epoch where it stopped."""
        expected = {'seed': self.seed, 'num_replicas': self.num_replicas, 'epoch_size': self.epoch_size}
        different = {key: (state[key], value) for key, value in expected.items() if state[key] != value}
        if different:
            raise ValueError(
                'the sampler state does not fit this run (saved, now): ' +
                ', '.join(f'{key} {saved} vs {now}' for key, (saved, now) in different.items()) +
                '; resume with the same seed, dataset and number of processes.')
        if not 0 <= state['start_index'] <= self.num_samples:
            raise ValueError(f"start_index must be in [0, {self.num_samples}], got {state['start_index']}.")
        self.epoch = state['epoch']
        self.start_index = state['start_index']
