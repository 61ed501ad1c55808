"""Temporal sampling of SPEC §4, with the semantics of the original 3D-ResNets transforms.

Frame numbers are 1-based. A segment [first, end) with stride k gives the candidate list
`first, first + k, ...` (the original's TemporalSubsampling); every clip is T consecutive
entries of that list starting at some position, loop padded when the list runs out.
With t_stride > 1 the original's even crop and sliding window took `range(begin, begin + T)`
over raw frame numbers, silently dropping the stride; here every clip honours it.
Validation and inference clips are stored as start positions so that datasets with
hundreds of thousands of clips keep only two integers per clip.
"""
from __future__ import annotations

import math

import torch


def frame_list(segment: tuple[int, int], t_stride: int = 1) -> list[int]:
    """Candidate frame numbers of a segment [first, end): every `t_stride`-th frame."""
    return list(range(segment[0], segment[1], t_stride))


def loop_pad(indices: list[int], size: int) -> list[int]:
    """Repeat `indices` from its start until it has `size` entries (the original LoopPadding)."""
    if not indices:
        raise ValueError("cannot loop-pad an empty frame list")
    return [indices[i % len(indices)] for i in range(max(size, len(indices)))]


def clip_at(indices: list[int], start: int, size: int) -> list[int]:
    """The `size` entries of `indices` from position `start`, loop padded when fewer remain."""
    return loop_pad(indices[start:start + size], size)


def random_start(n: int, size: int, generator: torch.Generator | None = None) -> int:
    """Training crop start (the original TemporalRandomCrop): uniform over
    0 .. max(0, n - size - 1).

    As in the original, the last full-length start n - size is never drawn (its bound is
    `len(frame_indices) - size - 1`); the original defines the training data, so we keep it.
    """
    return int(torch.randint(0, max(0, n - size - 1) + 1, (1,), generator=generator))


def even_starts(n: int, size: int, n_samples: int) -> list[int]:
    """Start positions of the original TemporalEvenCrop over a list of n frames.

    stride = max(1, ceil((n - 1 - size) / (n_samples - 1))); starts 0, stride, 2·stride, ...
    are taken until n_samples clips, and the first start whose clip runs past the end is the
    last one (that clip is loop padded). So n=33, T=16 gives 0, 8, 16; n=17 gives 0, 1, 2 (the
    last padded); n=16 gives 0, 1; n<=T gives 0. n_samples=1 (a division by zero in the
    original) gives the first clip only.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    stride = 1 if n_samples == 1 else max(1, math.ceil((n - 1 - size) / (n_samples - 1)))
    starts: list[int] = []
    for start in range(0, n, stride):
        if len(starts) >= n_samples:
            break
        starts.append(start)
        if start + size > n:
            break
    return starts


def window_starts(n: int, size: int, stride: int) -> list[int]:
    """Start positions of the original SlidingWindow (inference): 0, stride, ... until a window
    runs past the end; that window is the last (loop padded). With stride = size = 16, video
    lengths 1, 15, 16, 17, 33 give 1, 1, 1, 2, 3 windows."""
    if stride < 1:
        raise ValueError(f"inference stride must be at least 1, got {stride}")
    starts: list[int] = []
    for start in range(0, n, stride):
        starts.append(start)
        if start + size > n:
            break
    return starts
