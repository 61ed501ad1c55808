"""How a loader worker's batch reaches the process that trains on it.

DataLoader pickles a worker's batch through a queue, and by default every tensor travels as a
fresh shared-memory segment whose file descriptor is passed over a socket. For a batch of 16
clips of 16 × 112² frames on a 2-core machine that costs 5.7 ms of page faults to fill
the fresh 9.6 MB clip segment in the worker, and 3 ms in the receiving process to take five
descriptors and unmap the previous batch: about 8% of a worker's time (benchmarks/README.md).

Here the clip goes through shared buffers that a worker reuses once the receiving process has
dropped every view of them, and the small fields go by value inside the pickle. Both are
objects that unpickle as plain tensors, so the DataLoader, its pin-memory thread and the
training loop only ever see tensors.
"""
from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


class ByValue:
    """A tensor that is pickled with its data, not as a shared-memory segment (for a few
    hundred bytes, passing a descriptor costs far more than the bytes). Unpickles as a tensor
    with the same dtype and shape; for CPU tensors of the dtypes NumPy has (the batch's
    int64 and float32 fields)."""

    def __init__(self, tensor: Tensor) -> None:
        self.tensor = tensor

    def __reduce__(self):
        return torch.from_numpy, (self.tensor.numpy(),)


class ClipBuffers:
    """`n_slots` reusable shared-memory buffers for the clip stacks of one worker process.

    `stack` copies the clips into a free buffer and marks it taken in `taken`, a shared
    (n_slots,) uint8 array. The receiving process marks it free again when the buffer's
    storage dies there, that is, once no tensor or view of the batch is left (a storage
    finalizer, set up as the batch is unpickled). So a buffer is never written while anything
    can still read it, however long the receiver keeps a batch; when every buffer is taken,
    the stack goes to a fresh segment as DataLoader would have done. Buffers are kept per
    slot and replaced when the stack's shape changes (the last, smaller batch of an epoch).
    """

    def __init__(self, n_slots: int = 4) -> None:
        self.taken = torch.zeros(n_slots, dtype=torch.uint8).share_memory_()
        self.buffers: list[Tensor | None] = [None] * n_slots

    def stack(self, clips: Sequence[Tensor], dims: Sequence[int]) -> _Lent | Tensor:
        """clips: B tensors of one shape and dtype → what unpickles as
        torch.stack(clips).permute(dims), a view of a (B, ...) shared-memory stack."""
        shape = (len(clips), *clips[0].shape)
        free = (self.taken == 0).nonzero()
        if len(free) == 0:
            return torch.stack(clips, out=shared_empty(shape, clips[0].dtype)).permute(dims)
        slot = int(free[0])
        buffer = self.buffers[slot]
        if buffer is None or buffer.shape != shape or buffer.dtype != clips[0].dtype:
            buffer = self.buffers[slot] = shared_empty(shape, clips[0].dtype)
        self.taken[slot] = 1
        return _Lent(torch.stack(clips, out=buffer).permute(dims), self.taken, slot)


class _Lent:
    """A buffer of ClipBuffers on its way to the receiving process (see there)."""

    def __init__(self, tensor: Tensor, taken: Tensor, slot: int) -> None:
        self.tensor, self.taken, self.slot = tensor, taken, slot

    def __reduce__(self):
        return _receive, (self.tensor, self.taken, self.slot)


def _receive(tensor: Tensor, taken: Tensor, slot: int) -> Tensor:
    # The storage, not the tensor: views of the batch (a permuted clip, one sample of it)
    # keep the storage alive after the unpickled tensor object itself is gone.
    weakref.finalize(tensor.untyped_storage(), _give_back, taken.numpy(), slot)
    return tensor


def _give_back(taken: np.ndarray, slot: int) -> None:
    taken[slot] = 0


def shared_empty(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    # A new shared segment written only by the stack, as default_collate makes in a worker
    # (share_memory_() on a fresh tensor would copy its memory into the segment first).
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)
