"""Value normalization of SPEC §4, applied to whole batches on the device."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

# Per-channel (mean, std) of pixel values scaled to [0, 1], by the dataset they were measured
# on (the original's --mean_dataset).
MEAN_STD = {
    "kinetics": ((0.4345, 0.4051, 0.3775), (0.2768, 0.2713, 0.2737)),
    "activitynet": ((0.4477, 0.4209, 0.3906), (0.2767, 0.2695, 0.2714)),
    "0.5": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
KINETICS_MEAN, KINETICS_STD = MEAN_STD["kinetics"]


def normalization_stats(mean_dataset: str = "kinetics", no_mean_norm: bool = False,
                        no_std_norm: bool = False) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the original's --mean_dataset, --no_mean_norm and --no_std_norm: the
    statistics of `mean_dataset` (a key of MEAN_STD), a disabled mean 0 and a disabled
    std 1 (value scale 1)."""
    mean, std = MEAN_STD[mean_dataset]
    return (0.0, 0.0, 0.0) if no_mean_norm else mean, (1.0, 1.0, 1.0) if no_std_norm else std


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
