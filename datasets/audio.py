"""Precomputed audio teacher features (SPEC §1): one D-dimensional embedding per video, or
T of them. The paper's are PANNs CNN14 512-d embeddings; D is read from the files."""
from __future__ import annotations

import math
import os
from io import BytesIO
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from errors import UserError

AUDIO_DIM = 512   # the paper's features (PANNs Cnn14_emb512): D when no file gives one
BROKEN_FILE_FIX = ("re-extract it with util_scripts/extract_audio_features.py, or delete it "
                   "to train that video without audio")
_NPY_MAGIC = b"\x93NUMPY"
# Parsed .npy headers by their bytes: a dataset's feature files share one or a few headers,
# and NumPy's header parsing is most of the cost of np.load for a 2 KB file.
_npy_headers: dict[bytes, tuple[tuple[int, ...], bool, np.dtype, int]] = {}


def _read_npy(path: str | os.PathLike) -> np.ndarray:
    """The array in a .npy file (what np.load gives, without pickles), read whole without
    buffering. Raises OSError / ValueError for a file that is not a complete .npy array."""
    with open(path, "rb", buffering=0) as f:
        data = f.read()
    if data[:6] != _NPY_MAGIC or len(data) < 10:
        raise ValueError("not a .npy file")
    length_size = 2 if data[6] == 1 else 4
    start = 8 + length_size
    end = start + int.from_bytes(data[8:start], "little")
    header = data[6:end]
    if header not in _npy_headers:
        read_header = (np.lib.format.read_array_header_1_0 if data[6] == 1
                       else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read_header(BytesIO(data[8:end]))
        _npy_headers[header] = shape, fortran_order, dtype, math.prod(shape) * dtype.itemsize
    shape, fortran_order, dtype, expected = _npy_headers[header]
    if dtype.hasobject:
        raise ValueError("holds Python objects, not numbers")
    if len(data) - end != expected:
        raise ValueError(f"{len(data) - end} bytes of data, the header promises {expected}")
    array = np.frombuffer(data, dtype, offset=end)
    if fortran_order:
        return array.reshape(shape[::-1]).T
    return array.reshape(shape)


def read_audio_array(path: str | os.PathLike, dim: int | None = None) -> np.ndarray:
    """The contents of one feature file, checked: float32, shape (D,) or (T, D) with T, D ≥ 1
    (D == `dim` when given), every value finite. Anything else is a UserError naming the
    file: those are broken feature files, not missing audio."""
    try:
        array = _read_npy(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read audio feature ({e}); {BROKEN_FILE_FIX}") from None
    if array.dtype != np.float32:
        raise UserError(f"{path}: audio feature has dtype {array.dtype}, expected float32; "
                        f"{BROKEN_FILE_FIX}")
    if array.ndim not in (1, 2) or 0 in array.shape or (dim is not None and array.shape[-1] != dim):
        d = "D" if dim is None else dim
        raise UserError(f"{path}: audio feature has shape {array.shape}, "
                        f"expected ({d},) or (T, {d}); {BROKEN_FILE_FIX}")
    # A float64 sum of float32 values cannot overflow: it is finite exactly when they all are.
    if not np.isfinite(array.sum(dtype=np.float64)):
        raise UserError(f"{path}: audio feature contains NaN or inf; {BROKEN_FILE_FIX}")
    return array


def mixed_dim_error(path: str | os.PathLike, shape: tuple[int, ...],
                    reference: str | os.PathLike, reference_shape: tuple[int, ...]) -> UserError:
    """The error for a feature file whose D differs from an earlier file's of the same run."""
    return UserError(f"{path}: audio feature has shape {tuple(shape)}, but {reference} has shape "
                     f"{tuple(reference_shape)}: every audio feature file of a run must have the "
                     f"same dimension D; {BROKEN_FILE_FIX}")


class AudioBank:
    """The audio features of a dataset's videos, checked once, then served from memory.

    All rows sit in one (R, D) float32 array with per-video row ranges `offsets` (N + 1,):
    loader workers forked from the process share it without copying (a list of small
    arrays would be copied page by page as reference counts change), and no item reads a
    file. The array is either read here from the files (`AudioBank(files)`) or a memory-map
    of the consolidated cache (`datasets.audio_cache`), which workers share through the
    page cache and which pickles as its file name.

    dim: D, the features' dimension (AUDIO_DIM when no video has a feature).
    reference: (file, shape) of the first video's feature file, None when there is none;
        what errors about D name.
    """

    def __init__(self, files: Sequence[str | os.PathLike | None], dim: int | None = None) -> None:
        """Read every file (`read_audio_array`) now: per video the `.npy` file, float32 of
        shape (D,) or (T, D), or None when the video has no audio feature. A broken file,
        or one whose D differs from the first file's (or from `dim`), is a UserError
        naming it, before any training starts."""
        arrays = []
        reference = None
        for f in files:
            if f is None:
                arrays.append(None)
                continue
            array = read_audio_array(f, dim if reference is None else None)
            if reference is None:
                reference = (f, array.shape)
            elif array.shape[-1] != reference[1][-1]:
                raise mixed_dim_error(f, array.shape, *reference)
            arrays.append(array.reshape(-1, array.shape[-1]))
        d = reference[1][-1] if reference is not None else dim or AUDIO_DIM
        counts = [0 if a is None else len(a) for a in arrays]
        rows = [a for a in arrays if a is not None]
        self._set(np.concatenate(rows) if rows else np.empty((0, d), np.float32),
                  np.cumsum([0] + counts), reference)

    @classmethod
    def from_rows(cls, rows: np.ndarray, offsets: np.ndarray,
                  reference: tuple[str | os.PathLike, tuple[int, ...]] | None) -> AudioBank:
        """A bank over rows (R, D) float32 already checked (e.g. a memory-map), with
        per-video row ranges offsets (N + 1,) int64."""
        bank = cls.__new__(cls)
        bank._set(rows, offsets, reference)
        return bank

    def _set(self, rows: np.ndarray, offsets: np.ndarray, reference) -> None:
        self.rows = rows
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.reference = reference

    @property
    def dim(self) -> int:
        return self.rows.shape[1]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if isinstance(self.rows, np.memmap):
            # A worker started by pickling (spawn) maps the same file instead of a copy.
            state["rows"] = (self.rows.filename, self.rows.shape)
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["rows"], tuple):
            filename, shape = state["rows"]
            state["rows"] = np.memmap(filename, np.float32, "r", shape=shape)
        self.__dict__.update(state)

    def feature(self, video: int, generator: torch.Generator | None = None
                ) -> tuple[Tensor, float]:
        """(feature (D,) float32, weight) of video `video`: its only row, or for a (T, D)
        file one row drawn at every call from `generator` (None: the global torch RNG); zeros
        and weight 0.0 without audio, so the sample drops out of every audio term."""
        start, stop = int(self.offsets[video]), int(self.offsets[video + 1])
        if start == stop:
            return torch.zeros(self.dim, dtype=torch.float32), 0.0
        row = start if stop - start == 1 else start + int(
            torch.randint(0, stop - start, (1,), generator=generator))
        return torch.from_numpy(np.array(self.rows[row])), 1.0


