"""Clip-level spatial transforms of SPEC §4 on uint8 frames.

Each transform maps frames (N, 3, H, W) uint8 to (N, 3, S, S) uint8 with ONE set of random
parameters for the whole clip (the original drew them once per clip with
`randomize_parameters`) and ONE resize call for all frames. Resizing is bilinear with
antialiasing, which matches PIL's bilinear resize that the original used to within ±1-2
grey levels; it runs in the native uint8 kernel when frames are channels_last.

The parameters depend only on the frame size, so a transform can draw them first
(`plan(height, width)`), the decoder then produces only the part of the frame the plan
keeps, at a reduced scale where the output stays a downscale (`hdf5_clip.decode_frames`),
and `finish` resizes that part. `transform(frames)` does the three steps on decoded frames.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


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


@dataclass(frozen=True)
class CropPlan:
    """What a clip transform does to every frame of one clip.

    box: (top, left, h, w) part of the full frame that is kept and resized.
    scale: the JPEG decode scale for the box (1, 2, 4, 8); frame size and box are multiples.
    resize: (height, width) the box is resized to.
    crop: (top, left) of the S × S output inside the resized box.
    flip: mirror the output horizontally.
    """
    box: tuple[int, int, int, int]
    scale: int
    resize: tuple[int, int]
    crop: tuple[int, int]
    flip: bool


class ClipTransform(ABC):
    """A clip transform that draws its parameters from the frame size alone (see module
    docstring). `size` is the output side S."""

    size: int

    @abstractmethod
    def plan(self, height: int, width: int,
             generator: torch.Generator | None = None) -> CropPlan:
        """The parameters for one clip of height × width frames (random ones drawn here,
        from `generator` or, when None, the global torch RNG)."""

    def finish(self, frames: Tensor, plan: CropPlan) -> Tensor:
        """frames (N, 3, h, w) uint8, the plan's box at any decode scale → (N, 3, S, S)
        uint8, S = self.size. The box covers the same scene at every scale, so the output
        geometry does not depend on it."""
        out = F.interpolate(frames, size=plan.resize, mode="bilinear", antialias=True,
                            align_corners=False)
        top, left = plan.crop
        out = out[..., top:top + self.size, left:left + self.size]
        return out.flip(-1) if plan.flip else out

    def __call__(self, frames: Tensor) -> Tensor:
        """frames (N, 3, H, W) uint8 at full size → (N, 3, S, S) uint8 (the plan's box is
        resized from full size whatever its decode scale)."""
        plan = self.plan(frames.shape[-2], frames.shape[-1])
        top, left, h, w = plan.box
        return self.finish(frames[..., top:top + h, left:left + w], plan)


class ClipRandomResizedCrop(ClipTransform):
    """Training transform: RandomResizedCrop(size, scale, ratio) then horizontal flip with
    probability 0.5, parameters drawn once per clip from the torch RNG."""

    def __init__(self, size: int = 112, scale: tuple[float, float] = (0.25, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: bool = True) -> None:
        self.size, self.scale, self.ratio, self.hflip = size, scale, ratio, hflip

    def plan(self, height: int, width: int,
             generator: torch.Generator | None = None) -> CropPlan:
        """The crop of torchvision's RandomResizedCrop, then the flip, drawn in that order (as
        the original drew them) from `generator` or the global torch RNG. Always decoded at
        full size: only about 1 in 8 crops of 320 × 240 frames is at least 2 × 112 on both
        sides, a reduced box must have its corners on the reduced grid (1 box in 16 at scale
        2; others would move by half a reduced pixel), and Pillow's 1/2 decode costs about
        what torchvision's full-size decode does, so the gain would be a few per cent of
        those few clips."""
        box = random_resized_crop_params(height, width, self.scale, self.ratio, generator)
        flip = self.hflip and torch.rand(1, generator=generator).item() < 0.5
        return CropPlan(box, 1, (self.size, self.size), (0, 0), flip)


class ClipCenterCrop(ClipTransform):
    """Validation / inference transform: resize the short side to `size` (long side
    int(size · long / short), as torchvision's Resize(int)), then center crop size × size.

    reduced_decode: decode inside libjpeg at a reduced scale when that keeps enough pixels
    (8-19% faster, about 1 grey level of mean difference). Off by default so evaluation
    numbers come from the original's preprocessing (`--eval_reduced_decode` turns it on).
    """

    def __init__(self, size: int = 112, reduced_decode: bool = False) -> None:
        self.size = size
        self.scales = (1, 2, 4, 8) if reduced_decode else (1,)

    def plan(self, height: int, width: int,
             generator: torch.Generator | None = None) -> CropPlan:
        """Whole frame, decoded at the largest allowed scale 1/s that keeps the short side at
        least `size` and divides both sides; else at full size."""
        short, long = min(height, width), max(height, width)
        resized_long = int(self.size * long / short)
        resize = (self.size, resized_long) if height <= width else (resized_long, self.size)
        crop = (int(round((resize[0] - self.size) / 2.0)),
                int(round((resize[1] - self.size) / 2.0)))
        scale = max((s for s in self.scales
                     if short // s >= self.size and height % s == 0 and width % s == 0),
                    default=1)
        return CropPlan((0, 0, height, width), scale, resize, crop, False)
