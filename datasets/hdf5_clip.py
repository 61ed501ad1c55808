"""Read the frames of one clip from a video HDF5 file (SPEC §1) with a single HDF5 call, and
decode them cropped, optionally at a reduced scale."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg

Box = tuple[int, int, int, int]  # (top, left, height, width) in full-frame pixels


class BadSampleError(Exception):
    """A sample whose files cannot be read; the message is `"<file>: <reason>"`."""


@dataclass(frozen=True)
class EncodedClip:
    """The JPEG bytes of the distinct frames of a clip.

    numbers: (U,) the distinct 1-based frame numbers, ascending; data[u] the JPEG of
    frame numbers[u]; inverse: (T,) int64 with clip[t] = frame numbers[inverse[t]];
    frame_size: (height, width) read off the first frame's JPEG header.
    """
    path: Path
    numbers: np.ndarray
    data: list[np.ndarray]
    inverse: Tensor
    frame_size: tuple[int, int]


def read_encoded(path: str | Path, frame_numbers: Sequence[int]) -> EncodedClip:
    """The undecoded distinct frames of a clip, read with one HDF5 selection.

    frame_numbers: (T,) 1-based frame numbers, any order, repeats allowed (loop padding).
    Raises BadSampleError("<file>: <reason>") for a file that cannot be read or that has
    fewer frames than asked for, and for a first frame without a readable JPEG header.
    """
    unique, inverse = np.unique(np.asarray(frame_numbers, dtype=np.int64), return_inverse=True)
    try:
        encoded = _read_items(path, unique - 1)
    except BadSampleError:
        raise
    except Exception as e:  # h5py reports corrupt or truncated files with several types
        raise BadSampleError(f"{path}: cannot read HDF5 ({_one_line(e)})") from None
    try:
        # The header alone (no decoding): the crop can be drawn before any frame is decoded.
        height, width = jpeg_size(encoded[0])
    except ValueError as e:
        raise BadSampleError(f"{path}: cannot read the JPEG header, {e} "
                             f"(frame {unique[0]})") from None
    return EncodedClip(Path(path), unique, list(encoded), torch.from_numpy(inverse.reshape(-1)),
                       (height, width))


def _read_items(path: Path, index: np.ndarray) -> np.ndarray:
    """Items `index` (0-based, ascending, distinct) of the `video` dataset of `path`, as an
    object array of uint8 arrays, with one HDF5 selection.

    h5py's low-level calls: h5py.File's Python set-up and close-time sweep of open objects,
    and Dataset.__getitem__'s selection building, cost more than the read itself. Closing
    the file id while the dataset id is open only marks it; HDF5 closes the file when the
    dataset id goes, on return.
    """
    file_id = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY)
    try:
        dataset = h5py.h5d.open(file_id, b"video")
    finally:
        file_id.close()
    file_space = dataset.get_space()
    n_frames = file_space.shape[0]
    if index[0] < 0 or index[-1] >= n_frames:
        wrong = index[0] if index[0] < 0 else index[-1]
        raise BadSampleError(f"{path}: frame {wrong + 1} asked for, the file has "
                             f"{n_frames} frames")
    steps = np.diff(index)
    # Clips are evenly spaced frames (stride t_stride; loop padding only repeats them): one
    # strided hyperslab. Anything else: a point selection.
    if (steps == steps[:1]).all():
        file_space.select_hyperslab((int(index[0]),), (len(index),),
                                    (int(steps[0]) if len(steps) else 1,))
    else:
        file_space.select_elements(index.reshape(-1, 1))
    encoded = np.empty(len(index), dtype=h5py.vlen_dtype(np.uint8))
    dataset.read(h5py.h5s.create_simple((len(index),)), file_space, encoded)
    return encoded


def jpeg_size(data: np.ndarray | bytes) -> tuple[int, int]:
    """(height, width) of a JPEG image, read from its frame header (SOF) without decoding.

    Walks the marker segments from the start of the file. Raises ValueError when the data
    does not start like a JPEG or has no frame header before the end.
    """
    data = bytes(data)
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (no start-of-image marker)")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError(f"no marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
        elif marker in _FRAME_MARKERS:
            if i + 9 > len(data):
                break
            height, width = (int.from_bytes(data[j:j + 2], "big") for j in (i + 5, i + 7))
            if height == 0 or width == 0:
                raise ValueError(f"frame header gives size {width}x{height}")
            return height, width
        elif marker in _STANDALONE_MARKERS:
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    raise ValueError("no frame header before the end of the data")


# SOF0-SOF15 (start of frame, any coding process); C4, C8, CC are DHT, JPG, DAC.
_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-RST7, SOI, EOI.
_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xDA)])


def decode_frames(clip: EncodedClip, box: Box | None = None, scale: int = 1) -> Tensor:
    """Decode every frame of `clip` and keep the region `box` (None: the whole frame).

    scale: 1 decodes at full size with libjpeg-turbo through torchvision (the fastest
        full-size decoder here); 2, 4 or 8 let libjpeg scale the DCT down by that factor
        while decoding (Pillow's draft mode) and the box is taken in the reduced frame. At 1/2
        the decode itself costs about what torchvision's full-size one does; the saving is
        in everything after it (4× fewer pixels to copy and resize). Frame sizes and box
        coordinates must be multiples of `scale`, so the reduced box covers exactly the
        same part of the scene.
    Returns (U, 3, h / scale, w / scale) uint8 in channels_last memory, the layout the
    uint8 antialiased resize kernel works in. Only the box is copied out of the decoded
    frames, with one stack for the clip.
    Raises BadSampleError("<file>: <reason> (frame k)") for a frame that cannot be decoded
    or whose size differs from the first frame's header.
    """
    height, width = clip.frame_size
    top, left, h, w = box if box is not None else (0, 0, height, width)
    if any(v % scale for v in (height, width, top, left, h, w)):
        raise ValueError(f"frame {height}x{width} and box {box} must be multiples of the "
                         f"decode scale {scale}")
    if not (0 <= top and 0 <= left and top + h <= height and left + w <= width):
        raise ValueError(f"box {box} is not inside the {height}x{width} frame")
    decoded = _decode_scaled(clip, scale) if scale > 1 else _decode_full(clip)
    expected = (height // scale, width // scale)
    for number, frame in zip(clip.numbers, decoded):
        if frame.shape[:2] != expected:
            raise BadSampleError(f"{clip.path}: frames of different sizes, "
                                 f"{tuple(frame.shape[:2])} against {expected} (frame {number})")
    top, left, h, w = top // scale, left // scale, h // scale, w // scale
    crops = [f[top:top + h, left:left + w] for f in decoded]
    # Pillow's arrays are read-only: NumPy stacks those into a fresh (writable) array.
    frames = torch.stack(crops) if scale == 1 else torch.from_numpy(np.stack(crops))
    return frames.permute(0, 3, 1, 2)


def _decode_full(clip: EncodedClip) -> list[Tensor]:
    """(H, W, 3) uint8 per frame, decoded at full size."""
    data = [torch.from_numpy(d) for d in clip.data]
    try:
        # One call for the clip: torchvision's per-call bookkeeping is paid once.
        images = decode_jpeg(data, mode=ImageReadMode.RGB)
    except RuntimeError:
        images = [_decode_one(clip, number, d) for number, d in zip(clip.numbers, data)]
    # decode_jpeg returns (3, H, W) views of (H, W, 3) buffers: the (H, W, 3) views are the
    # frames in channels_last order at no cost.
    return [image.permute(1, 2, 0) for image in images]


def _decode_one(clip: EncodedClip, number: int, data: Tensor) -> Tensor:
    """Decode one frame alone, to name it when the batched decode of the clip failed."""
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB)
    except RuntimeError as e:
        raise BadSampleError(f"{clip.path}: cannot decode JPEG, {_one_line(e)} "
                             f"(frame {number})") from None


def _decode_scaled(clip: EncodedClip, scale: int) -> list[np.ndarray]:
    """(H / scale, W / scale, 3) uint8 per frame (read-only), scaled down inside the JPEG
    decoder."""
    frames = []
    for number, data in zip(clip.numbers, clip.data):
        try:
            image = Image.open(io.BytesIO(data))
            image.draft("RGB", (image.width // scale, image.height // scale))
            if image.mode != "RGB":  # greyscale or CMYK JPEG
                image = image.convert("RGB")
            frames.append(np.asarray(image))
        except Exception as e:  # Pillow reports broken data with several types
            raise BadSampleError(f"{clip.path}: cannot decode JPEG, {_one_line(e)} "
                                 f"(frame {number})") from None
    return frames


def _one_line(error: Exception) -> str:
    # torchvision prefixes its messages with the C++ source location: keep the last part.
    text = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return text.rsplit(".cpp:", 1)[-1].split(", ", 1)[-1] if ".cpp:" in text else text
