"""Precomputed audio teacher features (SPEC §1: PANNs CNN14 512-d embeddings)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

AUDIO_DIM = 512
BROKEN_FILE_FIX = ("re-extract it with util_scripts/extract_audio_features.py, or delete it "
                   "to train that video without audio")


def read_audio_array(path: Path) -> np.ndarray:
    """The contents of one feature file, checked: float32, shape (512,) or (T, 512) with
    T ≥ 1, every value finite. Anything else is a ValueError naming the file: those are
    broken feature files, not missing audio."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read audio feature ({e}); {BROKEN_FILE_FIX}") from None
    if array.dtype != np.float32:
        raise ValueError(f"{path}: audio feature has dtype {array.dtype}, expected float32; "
                         f"{BROKEN_FILE_FIX}")
    if array.shape != (AUDIO_DIM,) and not (array.ndim == 2 and array.shape[1] == AUDIO_DIM
                                             and array.shape[0] > 0):
        raise ValueError(f"{path}: audio feature has shape {array.shape}, "
                         f"expected ({AUDIO_DIM},) or (T, {AUDIO_DIM}); {BROKEN_FILE_FIX}")
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: audio feature contains NaN or inf; {BROKEN_FILE_FIX}")
    return array


class AudioBank:
    """The audio features of a dataset's videos, read and checked once, then kept in memory.

    files: per video the `.npy` file, float32 of shape (512,) or (T, 512), or None when the
        video has no audio feature. Every file is read here (`read_audio_array`), so a broken
        one is a ValueError naming it before any training starts.

    All rows sit in one (R, 512) float32 array with per-video row ranges: loader workers
    forked from the process share it without copying (a list of small arrays would be
    copied page by page as reference counts change), and no item reads a file. UCF51:
    6,837 × 2 KB ≈ 14 MB; VGGSound: about 200,000 × 2 KB ≈ 400 MB.
    """

    def __init__(self, files: Sequence[Path | None]) -> None:
        arrays = [np.empty((0, AUDIO_DIM), np.float32) if f is None
                  else read_audio_array(f).reshape(-1, AUDIO_DIM) for f in files]
        self.offsets = np.cumsum([0] + [len(a) for a in arrays])
        self.rows = np.concatenate(arrays) if arrays else np.empty((0, AUDIO_DIM), np.float32)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def feature(self, video: int, generator: torch.Generator | None = None
                ) -> tuple[Tensor, float]:
        """(feature (512,) float32, weight) of video `video`: its only row, or for a (T, 512)
        file one row drawn at every call from `generator` (None: the global torch RNG); zeros
        and weight 0.0 without audio, so the sample drops out of every audio term."""
        start, stop = int(self.offsets[video]), int(self.offsets[video + 1])
        if start == stop:
            return torch.zeros(AUDIO_DIM, dtype=torch.float32), 0.0
        row = start if stop - start == 1 else start + int(
            torch.randint(0, stop - start, (1,), generator=generator))
        return torch.from_numpy(self.rows[row].copy()), 1.0


def load_audio_feature(path: Path | None) -> tuple[Tensor, float]:
    """The audio feature of one file and its weight, as `AudioBank.feature` gives it
    (path None: no audio). A broken file is a ValueError naming it."""
    return AudioBank([path]).feature(0)
