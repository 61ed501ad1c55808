"""Clips as undecoded JPEG frames plus their crop plans: the loader side of decoding on the
training device (`device_decode`, --gpu_decode).

A loader worker then reads the bytes and draws the spatial parameters exactly as it does for a
decoded clip (same generator, same order), so the augmentation statistics of SPEC §4 do not
depend on where the frames are decoded. A batch travels as one byte tensor plus small index
tensors, whatever the number and sizes of its frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import get_worker_info

from .hdf5_clip import EncodedClip
from .spatial import CropPlan
from .worker_transport import ByValue, shared_empty


@dataclass(frozen=True)
class EncodedItem:
    """The `encoded` field of a dataset item: a clip's distinct JPEG frames (`clip`), the
    spatial parameters drawn for it (`plan`) and the output side S (`size`)."""
    clip: EncodedClip
    plan: CropPlan
    size: int


@dataclass
class EncodedBatch:
    """The undecoded frames of B clips and what makes each (3, T, S, S) clip of them.

    data: (N,) uint8, the JPEG files of the batch's F frames back to back: clip 0's distinct
        frames in ascending frame number, then clip 1's, ...
    offsets: (F + 1,) int64, frame f is data[offsets[f]:offsets[f + 1]].
    numbers: (F,) int64, the 1-based frame number of each frame in its video.
    first: (B + 1,) int64, clip b's frames are frames first[b] .. first[b + 1] - 1.
    inverse: (B, T) int64, frame t of clip b is frame inverse[b, t] of the batch (loop
        padding repeats frames).
    plans: B crop plans (spatial.CropPlan; the box in full-frame pixels), drawn for frames
        of size frame_sizes[b] = (height, width), read off each clip's first JPEG header.
    paths: B HDF5 files, for error messages. size: the output side S.
    """
    data: Tensor
    offsets: Tensor
    numbers: Tensor
    first: Tensor
    inverse: Tensor
    plans: list[CropPlan]
    frame_sizes: list[tuple[int, int]]
    paths: list[Path]
    size: int

    @classmethod
    def collate(cls, items: list[EncodedItem]) -> EncodedBatch:
        """One batch of the `encoded` fields of B items (of one clip length T and size S).

        Inside a loader worker the bytes are written straight into a shared-memory segment
        (what DataLoader would copy them into) and the index tensors go by value.
        """
        if len({item.size for item in items}) != 1 or len({len(item.clip.inverse) for item in items}) != 1:
            raise ValueError("the clips of a batch must have one length and one output size")
        arrays = [frame for item in items for frame in item.clip.data]
        lengths = np.fromiter((len(frame) for frame in arrays), dtype=np.int64, count=len(arrays))
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        n_bytes = int(offsets[-1])
        in_worker = get_worker_info() is not None
        data = shared_empty((n_bytes,), torch.uint8) if in_worker else torch.empty(n_bytes, dtype=torch.uint8)
        np.concatenate(arrays, out=data.numpy())
        counts = [len(item.clip.numbers) for item in items]
        first = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum(counts, out=first[1:])
        inverse = torch.stack([item.clip.inverse + int(start) for item, start in zip(items, first)])
        return cls(data, torch.from_numpy(offsets),
                   torch.from_numpy(np.concatenate([item.clip.numbers for item in items])),
                   torch.from_numpy(first), inverse, [item.plan for item in items],
                   [item.clip.frame_size for item in items], [item.clip.path for item in items],
                   items[0].size)

    def __len__(self) -> int:
        return len(self.plans)

    def frames(self) -> list[Tensor]:
        """The F JPEG files as (n_f,) uint8 views of `data`."""
        return list(self.data.split(torch.diff(self.offsets).tolist()))

    def clip(self, b: int) -> EncodedClip:
        """Clip b as the CPU decoder takes it (`hdf5_clip.decode_frames`)."""
        start, end = int(self.first[b]), int(self.first[b + 1])
        data = [frame.numpy() for frame in self.frames()[start:end]]
        return EncodedClip(self.paths[b], self.numbers[start:end].numpy(), data,
                           self.inverse[b] - start, self.frame_sizes[b])

    def __reduce__(self):
        # The index tensors are a few hundred bytes: by value, not as shared-memory segments.
        small = (ByValue(self.offsets), ByValue(self.numbers), ByValue(self.first), ByValue(self.inverse))
        return EncodedBatch, (self.data, *small, self.plans, self.frame_sizes, self.paths, self.size)
