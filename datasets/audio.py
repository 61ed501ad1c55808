"""Precomputed audio teacher features (SPEC §1: PANNs CNN14 512-d embeddings)."""
from __future__ import annotations

from pathlib import Path

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


def load_audio_feature(path: Path | None) -> tuple[Tensor, float]:
    """The audio feature of one sample and its weight.

    path: the `.npy` file, float32 of shape (512,) or (T, 512); None when the video has no
        audio feature (existence is checked once when the dataset is built).
    Returns (feature (512,) float32, weight): a (T, 512) file gives one row drawn from the
    torch RNG at every call; no file gives zeros and weight 0.0, so the sample drops out of
    every audio term. A broken file is a ValueError naming it (`read_audio_array`).
    """
    if path is None:
        return torch.zeros(AUDIO_DIM, dtype=torch.float32), 0.0
    array = read_audio_array(path)
    row = array if array.ndim == 1 else array[int(torch.randint(0, array.shape[0], (1,)))]
    return torch.from_numpy(np.array(row, dtype=np.float32)), 1.0
