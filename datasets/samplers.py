"""A distributed sampler for evaluation: every item exactly once over all ranks."""
from __future__ import annotations

from typing import Iterator, Sized

import torch.distributed as dist
from torch.utils.data import Sampler


class OrderedDistributedSampler(Sampler[int]):
    """Rank r of W gets items r, r + W, r + 2W, ... with no padding and no shuffling.

    torch's DistributedSampler repeats items so that every rank has the same count; for
    validation and inference that would count some clips twice. Here ranks may differ by one
    item, so callers gather variable-length results (or pad them themselves).
    """

    def __init__(self, dataset: Sized, rank: int | None = None,
                 world_size: int | None = None) -> None:
        self.n = len(dataset)
        self.world_size = dist.get_world_size() if world_size is None else world_size
        self.rank = dist.get_rank() if rank is None else rank
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world size {self.world_size}")

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))
