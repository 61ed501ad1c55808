"""Dataset items → batch (DESIGN.md): tensors stacked, `bad` records concatenated."""
from __future__ import annotations

import torch
from torch.utils.data import get_worker_info

from .encoded import EncodedBatch
from .worker_transport import ByValue, ClipBuffers

_clip_buffers: ClipBuffers | None = None


def collate(items: list[dict]) -> dict:
    """Stack every tensor field over the batch (clip → (B, 3, T, S, S) uint8 in
    channels_last_3d memory, target (B,), audio (B, D), audio_weight (B,), video_index
    (B,)) and concatenate the `bad` lists, so the training loop can count replaced samples.
    Items with undecoded frames (`encoded`) give an EncodedBatch under `encoded` instead of
    the clip.

    Inside a loader worker the fields are wrapped for the trip to the training process
    (`worker_transport`) and arrive there as the same tensors.
    """
    in_worker = get_worker_info() is not None
    batch = {}
    for key in items[0]:
        if key not in ("bad", "clip", "encoded"):
            field = torch.stack([item[key] for item in items])
            batch[key] = ByValue(field) if in_worker else field
    batch["bad"] = [record for item in items for record in item.get("bad", [])]
    if "encoded" in items[0]:
        batch["encoded"] = EncodedBatch.collate([item["encoded"] for item in items])
        return batch
    # Items hold their clip as a (3, T, S, S) view of (T, S, S, 3) memory, the resize
    # kernel's channels_last output. Stacking in that memory order is a plain copy (a
    # contiguous (B, 3, T, S, S) stack would transpose every clip, a fifth of a worker's
    # time), and the batch arrives in the layout the student runs in on the GPU.
    clips = [item["clip"].permute(1, 2, 3, 0) for item in items]
    if in_worker:
        batch["clip"] = _worker_clip_buffers().stack(clips, dims=(0, 4, 1, 2, 3))
    else:
        batch["clip"] = torch.stack(clips).permute(0, 4, 1, 2, 3)
    return batch


def _worker_clip_buffers() -> ClipBuffers:
    # One set per worker process, made in the worker (the training process never collates
    # in a worker, so forked workers start with none).
    global _clip_buffers
    if _clip_buffers is None:
        _clip_buffers = ClipBuffers()
    return _clip_buffers
