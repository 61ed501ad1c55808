"""Clip-level spatial transforms of SPEC §4 on uint8 frames.

Each transform maps frames (N, 3, H, W) uint8 to (N, 3, S, S) uint8 with ONE set of random
parameters for the whole clip (the original drew them once per clip with
`randomize_parameters`) and ONE resize call for all frames. Resizing is bilinear with
antialiasing, which matches PIL's bilinear resize that the original used to within ±1-2
grey levels; it runs in the native uint8 kernel when frames are channels_last.
"""
from __future__ import annotations

import math

import torch
import torchvision.transforms.v2.functional as F
from torch import Tensor
from torchvision.transforms import InterpolationMode


def random_resized_crop_params(height: int, width: int, scale: tuple[float, float],
                               ratio: tuple[float, float],
                               generator: torch.Generator | None = None
                               ) -> tuple[int, int, int, int]:
    """(top, left, h, w) of torchvision's `RandomResizedCrop.get_params`, the same draws from
    the torch RNG in the same order: area share ~ U(scale), log aspect ratio ~ U(log ratio),
    10 tries, then a central crop clamped to the ratio range."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1],
                                                  generator=generator).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class ClipRandomResizedCrop:
    """Training transform: RandomResizedCrop(size, scale, ratio) then horizontal flip with
    probability 0.5, parameters drawn once per clip from the torch RNG."""

    def __init__(self, size: int = 112, scale: tuple[float, float] = (0.25, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: bool = True) -> None:
        self.size, self.scale, self.ratio, self.hflip = size, scale, ratio, hflip

    def __call__(self, frames: Tensor) -> Tensor:
        """frames (N, 3, H, W) uint8 → (N, 3, size, size) uint8."""
        top, left, h, w = random_resized_crop_params(frames.shape[-2], frames.shape[-1],
                                                     self.scale, self.ratio)
        out = F.resized_crop(frames, top, left, h, w, [self.size, self.size],
                             interpolation=InterpolationMode.BILINEAR, antialias=True)
        if self.hflip and torch.rand(1).item() < 0.5:
            out = out.flip(-1)
        return out


class ClipCenterCrop:
    """Validation / inference transform: resize the short side to `size` (long side
    int(size · long / short), as torchvision's Resize(int)), then center crop size × size."""

    def __init__(self, size: int = 112) -> None:
        self.size = size

    def __call__(self, frames: Tensor) -> Tensor:
        """frames (N, 3, H, W) uint8 → (N, 3, size, size) uint8."""
        out = F.resize(frames, [self.size], interpolation=InterpolationMode.BILINEAR,
                       antialias=True)
        return F.center_crop(out, [self.size, self.size])
