"""Read the frames of one clip from a video HDF5 file (SPEC §1) with a single HDF5 call."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg


class BadSampleError(Exception):
    """A sample whose files cannot be read; the message is `"<file>: <reason>"`."""


def read_frames(path: Path, frame_numbers: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Decode the distinct frames of a clip.

    frame_numbers: (T,) 1-based frame numbers, any order, repeats allowed (loop padding).
    Returns `frames` (U, 3, H, W) uint8 in channels_last memory, the U distinct frames in
    ascending order, and `inverse` (T,) int64 with clip[t] = frames[inverse[t]]. Transforming
    the U distinct frames before expanding saves the work on repeated ones.
    Raises BadSampleError("<file>: <reason> [(frame k)]") for anything unreadable.
    """
    unique, inverse = np.unique(np.asarray(frame_numbers, dtype=np.int64), return_inverse=True)
    try:
        with h5py.File(path, "r") as f:
            video = f["video"]
            if unique[0] < 1 or unique[-1] > len(video):
                raise BadSampleError(f"{path}: frame {unique[-1]} asked for, the file has "
                                     f"{len(video)} frames")
            # One fancy-indexed read: a single HDF5 selection for the whole clip.
            encoded = video[unique - 1]
    except BadSampleError:
        raise
    except Exception as e:  # h5py reports corrupt or truncated files with several types
        raise BadSampleError(f"{path}: cannot read HDF5 ({_one_line(e)})") from None

    decoded = []
    for number, data in zip(unique, encoded):
        try:
            image = decode_jpeg(torch.from_numpy(data), mode=ImageReadMode.RGB)
        except RuntimeError as e:
            raise BadSampleError(f"{path}: cannot decode JPEG, {_one_line(e)} "
                                 f"(frame {number})") from None
        # decode_jpeg returns a (3, H, W) view of an (H, W, 3) buffer: stacking the (H, W, 3)
        # views copies nothing extra and yields channels_last frames, the layout the uint8
        # antialiased resize kernel works in.
        decoded.append(image.permute(1, 2, 0))
    if any(d.shape != decoded[0].shape for d in decoded):
        sizes = sorted({tuple(d.shape[:2]) for d in decoded})
        raise BadSampleError(f"{path}: frames of different sizes {sizes}")
    frames = torch.stack(decoded).permute(0, 3, 1, 2)
    return frames, torch.from_numpy(inverse.reshape(-1))


def read_clip(path: Path, frame_numbers: Sequence[int]) -> Tensor:
    """The clip itself: (T, 3, H, W) uint8, frame t = frame number frame_numbers[t]."""
    frames, inverse = read_frames(path, frame_numbers)
    return frames[inverse]


def _one_line(error: Exception) -> str:
    # torchvision prefixes its messages with the C++ source location: keep the last part.
    text = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return text.rsplit(".cpp:", 1)[-1].split(", ", 1)[-1] if ".cpp:" in text else text
