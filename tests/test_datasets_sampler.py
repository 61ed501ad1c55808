"""OrderedDistributedSampler: every item on exactly one rank, no padding."""
import pytest

from datasets import OrderedDistributedSampler


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
