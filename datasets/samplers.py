"""Samplers: seeded training items, and a distributed sampler for evaluation that gives
every item exactly once over all ranks."""
from __future__ import annotations

from typing import Iterator, Sized

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler


class SeededSampler(Sampler[tuple[int, int]]):
    """Wraps a training sampler so that every item comes with its own RNG seed: it yields
    `(index, seed)` keys, and VideoDataset draws that item's augmentation from the seed.

    The k-th item of an epoch on rank r gets the k-th 32-bit word of NumPy's SeedSequence of
    (seed, epoch, r). An epoch's clips then depend on (seed, epoch, rank) and the sampler's
    order alone: not on the number of workers, on which worker loads an item, or on whether
    the workers live across epochs. So training workers persist (no fork of the training
    process every epoch) and a resumed run still replays the uninterrupted one.
    `set_epoch(epoch)` is forwarded to the wrapped sampler (DistributedSampler's shuffle).
    """

    def __init__(self, sampler: Sampler[int], seed: int, rank: int = 0) -> None:
        self.sampler, self.seed, self.rank, self.epoch = sampler, seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        seeds = np.random.SeedSequence([self.seed, self.epoch, self.rank]).generate_state(
            len(self.sampler)).tolist()
        return zip(self.sampler, seeds)

    def __len__(self) -> int:
        return len(self.sampler)


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
