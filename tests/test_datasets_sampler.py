"""OrderedDistributedSampler: every item on exactly one rank, no padding. SeededSampler:
an item's seed follows (seed, epoch, rank, position) alone."""
import pytest
from torch.utils.data import DistributedSampler

from datasets import OrderedDistributedSampler
from datasets.samplers import SeededSampler


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 10, 11])
def test_each_item_exactly_once_over_the_ranks(world_size, n):
    dataset = list(range(n))
    per_rank = [list(OrderedDistributedSampler(dataset, rank=r, world_size=world_size))
                for r in range(world_size)]
    seen = sorted(i for items in per_rank for i in items)
    assert seen == list(range(n))  # no padding, no duplicates, nothing missing
    for r, items in enumerate(per_rank):
        assert items == [i for i in range(n) if i % world_size == r]
        assert len(OrderedDistributedSampler(dataset, rank=r, world_size=world_size)) == len(items)


def test_rank_outside_world_is_rejected():
    with pytest.raises(ValueError, match="rank 2 outside world size 2"):
        OrderedDistributedSampler([1, 2, 3], rank=2, world_size=2)


def seeded_keys(seed, epoch, rank=0, world_size=1, n=10):
    order = DistributedSampler(list(range(n)), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    sampler = SeededSampler(order, seed, rank)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_seeded_sampler_keys_follow_seed_epoch_and_rank():
    keys = seeded_keys(seed=3, epoch=2)
    assert keys == seeded_keys(seed=3, epoch=2)  # nothing else enters
    indices, seeds = zip(*keys)
    # The wrapped sampler's order, with set_epoch forwarded to it.
    reference = DistributedSampler(list(range(10)), num_replicas=1, rank=0, shuffle=True, seed=3)
    reference.set_epoch(2)
    assert list(indices) == list(reference) and sorted(indices) == list(range(10))
    assert len(set(seeds)) == 10 and all(0 <= s < 2**32 for s in seeds)
    for other in (seeded_keys(seed=4, epoch=2), seeded_keys(seed=3, epoch=3),
                  seeded_keys(seed=3, epoch=2, rank=1, world_size=2)):
        assert not set(seeds) & {s for _, s in other}
    assert len(SeededSampler(reference, 3)) == 10
