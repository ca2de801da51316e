"""Epoch sampler (class-balanced, or every image once): class frequencies, determinism, distributed shards and exact
resume."""
from collections import Counter

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import BatchSampler

from timm_fer.data import ClassBalancedSampler

TARGETS = [0] * 50 + [1] * 10 + [2] * 3 + [4] * 7  # class 3 has no images


def _shards(targets, world, epoch=0, seed=0, **kwargs):
    shards = []
    for rank in range(world):
        sampler = ClassBalancedSampler(targets, num_replicas=world, rank=rank, seed=seed, **kwargs)
        sampler.set_epoch(epoch)
        shards.append(list(sampler))
    return shards


def test_every_class_is_drawn_as_often_as_the_largest():
    sampler = ClassBalancedSampler(TARGETS)
    indices = list(sampler)
    assert len(indices) == len(sampler) == 4 * 50
    assert Counter(TARGETS[i] for i in indices) == {0: 50, 1: 50, 2: 50, 4: 50}
    draws = Counter(indices)
    assert all(draws[i] == 1 for i in range(50))
    assert all(draws[i] == 5 for i in range(50, 60))
    assert sorted(draws[i] for i in range(60, 63)) == [16, 17, 17]
    assert set(draws) == set(range(len(TARGETS)))


@given(counts=st.lists(st.integers(0, 12), min_size=1, max_size=6).filter(any), seed=st.integers(0, 2 ** 16))
def test_balanced_for_any_class_counts(counts, seed):
    targets = [label for label, count in enumerate(counts) for _ in range(count)]
    indices = list(ClassBalancedSampler(targets, seed=seed))
    per_class = Counter(targets[i] for i in indices)
    assert set(per_class.values()) == {max(counts)}
    assert set(per_class) == {label for label, count in enumerate(counts) if count}


@given(counts=st.lists(st.integers(0, 12), min_size=1, max_size=6).filter(any), seed=st.integers(0, 2 ** 16),
       epoch=st.integers(0, 5))
def test_unbalanced_epoch_draws_every_image_once(counts, seed, epoch):
    targets = [label for label, count in enumerate(counts) for _ in range(count)]
    sampler = ClassBalancedSampler(targets, seed=seed, balanced=False)
    sampler.set_epoch(epoch)
    indices = list(sampler)
    assert sorted(indices) == list(range(len(targets))) and len(sampler) == len(targets)


@pytest.mark.parametrize('world', [2, 3])
def test_unbalanced_shards_cover_the_dataset_and_resume_exactly(world):
    shards = _shards(TARGETS, world, epoch=2, balanced=False)
    assert set().union(*map(set, shards)) == set(range(len(TARGETS)))
    sampler = ClassBalancedSampler(TARGETS, num_replicas=world, rank=1, seed=0, balanced=False)
    sampler.set_epoch(2)
    state = sampler.state_dict(num_consumed=5)
    resumed = ClassBalancedSampler(TARGETS, num_replicas=world, rank=1, seed=0, balanced=False)
    resumed.load_state_dict(state)
    assert list(resumed) == shards[1][5:]
    with pytest.raises(ValueError, match='epoch_size'):
        ClassBalancedSampler(TARGETS, num_replicas=world, rank=1, seed=0).load_state_dict(state)


def test_order_depends_on_seed_and_epoch_only():
    assert _shards(TARGETS, 1, epoch=3, seed=7) == _shards(TARGETS, 1, epoch=3, seed=7)
    assert _shards(TARGETS, 1, epoch=3, seed=7) != _shards(TARGETS, 1, epoch=4, seed=7)
    assert _shards(TARGETS, 1, epoch=3, seed=7) != _shards(TARGETS, 1, epoch=3, seed=8)


@pytest.mark.parametrize('world', [2, 3, 7])
def test_distributed_shards_are_disjoint_equal_and_cover_the_epoch(world):
    shards = _shards(TARGETS, world, epoch=1, sample_seeds=True)
    single = _shards(TARGETS, 1, epoch=1, sample_seeds=True)[0]
    assert len({len(shard) for shard in shards}) == 1
    positions = [position for rank in range(world) for position in range(rank, len(shards[0]) * world, world)]
    assert sorted(positions) == list(range(len(shards[0]) * world))
    padded = [shards[position % world][position // world] for position in range(len(shards[0]) * world)]
    assert padded[:len(single)] == single
    assert padded[len(single):] == single[:len(padded) - len(single)]


def test_global_batches_match_a_single_process():
    world, per_rank = 2, 5
    single = list(BatchSampler(ClassBalancedSampler(TARGETS), per_rank * world, drop_last=True))
    ranks = [list(BatchSampler(ClassBalancedSampler(TARGETS, world, rank), per_rank, drop_last=True))
             for rank in range(world)]
    for step, batch in enumerate(single):
        assert sorted(batch) == sorted(ranks[0][step] + ranks[1][step])


def test_sample_seeds_follow_positions_not_processes():
    single = dict(enumerate(_shards(TARGETS, 1, sample_seeds=True)[0]))
    shards = _shards(TARGETS, 4, sample_seeds=True)
    for rank, shard in enumerate(shards):
        for i, (index, seed) in enumerate(shard):
            assert single[rank + 4 * i] == (index, seed)
    assert len({seed for _, seed in single.values()}) == len(single)


def test_state_dict_resumes_mid_epoch_exactly():
    sampler = ClassBalancedSampler(TARGETS, num_replicas=2, rank=1, seed=3)
    sampler.set_epoch(5)
    full = list(sampler)
    state = sampler.state_dict(num_consumed=37)
    resumed = ClassBalancedSampler(TARGETS, num_replicas=2, rank=1, seed=3)
    resumed.load_state_dict(state)
    assert resumed.epoch == 5 and len(resumed) == len(full) - 37
    assert list(resumed) == full[37:]
    resumed.set_epoch(6)
    assert len(list(resumed)) == len(full)


def test_state_dict_from_another_run_is_refused():
    state = ClassBalancedSampler(TARGETS, num_replicas=2, rank=0).state_dict()
    with pytest.raises(ValueError, match='num_replicas 2 vs 4'):
        ClassBalancedSampler(TARGETS, num_replicas=4, rank=0).load_state_dict(state)
    with pytest.raises(ValueError, match='rank must be in'):
        ClassBalancedSampler(TARGETS, num_replicas=2, rank=2)


def test_works_in_a_data_loader():
    dataset = torch.utils.data.TensorDataset(torch.arange(len(TARGETS)), torch.tensor(TARGETS))
    sampler = ClassBalancedSampler(TARGETS, seed=1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, sampler=sampler)
    labels = torch.cat([batch_labels for _, batch_labels in loader])
    assert torch.bincount(labels).tolist() == [50, 50, 50, 0, 50]
