"""Value normalization of SPEC §4, applied to whole batches on the device."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

KINETICS_MEAN = (0.4345, 0.4051, 0.3775)
KINETICS_STD = (0.2768, 0.2713, 0.2737)


def normalization_stats(no_mean_norm: bool = False, no_std_norm: bool = False
                        ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for the original's --no_mean_norm / --no_std_norm flags: a disabled
    mean is 0 and a disabled std is 1 (value scale 1, Kinetics statistics otherwise)."""
    mean = (0.0, 0.0, 0.0) if no_mean_norm else KINETICS_MEAN
    std = (1.0, 1.0, 1.0) if no_std_norm else KINETICS_STD
    return mean, std


def normalize_clip(clip: Tensor, mean: Sequence[float] = KINETICS_MEAN,
                   std: Sequence[float] = KINETICS_STD, dtype: torch.dtype = torch.float32
                   ) -> Tensor:
    """clip (B, 3, T, H, W) uint8 → (B, 3, T, H, W) `dtype`: (x / 255 - mean[c]) / std[c].

    Runs on the clip's device so the loader ships 4× fewer bytes (uint8) to it.
    """
    if clip.dim() != 5 or clip.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, T, H, W) clip batch, got shape {tuple(clip.shape)}")
    shape = (1, 3, 1, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=clip.device).view(shape)
    std_t = torch.tensor(std, dtype=torch.float32, device=clip.device).view(shape)
    # (x/255 - m)/s = x·(1/(255 s)) - m/s: one multiply-add over the batch.
    scale = 1.0 / (255.0 * std_t)
    shift = -mean_t / std_t
    return torch.addcmul(shift, clip.to(torch.float32), scale).to(dtype)
