"""DataLoader construction for the video datasets."""
from __future__ import annotations

import random
from collections.abc import Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from .collate import collate
from .progress import progress
from .samplers import OrderedDistributedSampler, SeededSampler
from .video_dataset import UnreadableDataError


def build_loader(dataset: Dataset, batch_size: int, shuffle: bool, n_threads: int,
                 distributed: bool = False, drop_last: bool = False, seed: int = 0
                 ) -> DataLoader:
    """A DataLoader over `dataset` with the `collate` of this package.

    shuffle=True (training): torch's DistributedSampler shuffles (over one replica when not
        `distributed`) from (seed, epoch), and SeededSampler gives every item its own
        augmentation seed, so an epoch depends on (seed, epoch, rank) alone. Call
        `loader.sampler.set_epoch(epoch)` every epoch (training.engine.seed_epoch).
        shuffle=False (validation, inference): in order; under `distributed`,
        OrderedDistributedSampler gives every item to exactly one rank.
    n_threads: worker processes, which persist between epochs; 0 loads in the calling
        process. A training epoch gives the same batches either way.
    seed: drives shuffling, the items' seeds and the workers' own torch seeds (offset by the
        rank).
    """
    rank = dist.get_rank() if distributed else 0
    sampler: Sampler | None = None
    if shuffle:
        order = DistributedSampler(dataset, num_replicas=dist.get_world_size() if distributed else 1,
                                   rank=rank, shuffle=True, seed=seed, drop_last=drop_last)
        sampler = SeededSampler(order, seed, rank)
    elif distributed:
        sampler = OrderedDistributedSampler(dataset)
    generator = torch.Generator()
    generator.manual_seed(seed + rank)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=n_threads,
        collate_fn=collate, pin_memory=torch.cuda.is_available(), drop_last=drop_last,
        persistent_workers=n_threads > 0,
        worker_init_fn=_seed_worker if n_threads > 0 else None, generator=generator)


def _seed_worker(worker_id: int) -> None:
    # DataLoader already seeds torch per worker; derive Python's and NumPy's RNGs from it so
    # any library code drawing from them is reproducible too.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def batches(loader: Iterable, desc: str, show: bool = True):
    """The loader's batches under a progress bar (`show`: this process draws it; on a
    terminal a live bar, otherwise one line when the pass is done, `datasets.progress`).

    A dataset that finds nothing readable raises UnreadableDataError with its one-line
    message, also when a loader worker raised it: the DataLoader re-raises a worker's error
    with the worker's traceback as its message, the original message on the last line.
    """
    iterator = iter(progress(loader, desc, show=show))
    while True:
        try:
            sample = next(iterator)
        except StopIteration:
            return
        except UnreadableDataError as e:
            last = str(e).strip().splitlines()[-1]
            raise UnreadableDataError(last.removeprefix(f"{UnreadableDataError.__module__}."
                                                        f"{UnreadableDataError.__name__}: ")) from None
        yield sample
