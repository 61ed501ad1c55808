"""One training batch on the device (the `batch` stage of the data flow)."""
from dataclasses import dataclass

import torch
from torch import Tensor

from datasets.device_decode import clip_to_device
from datasets.transforms import normalize_clip


@dataclass
class Batch:
    clip: Tensor          # (B, 3, T, H, W) normalized float
    target: Tensor        # (B,) int64
    audio: Tensor         # (B, D) float32 (dataset.audio_dim), zeros where a video has no audio
    audio_weight: Tensor  # (B,) float32, 1 where a video has audio
    frame_index: int      # frame of the clip the image teacher sees (SPEC §2)


def model_input(clip: Tensor, mean: list[float], std: list[float], channels_last: bool) -> Tensor:
    """clip (B, 3, T, H, W) uint8 on the device, any memory layout → the normalized float
    student input, in channels_last_3d memory when the student runs in it, else contiguous."""
    return normalize_clip(clip, mean, std).contiguous(
        memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)


def to_device_batch(sample: dict, device: torch.device, mean: list[float], std: list[float],
                    frame_index: int, channels_last: bool = False) -> Batch:
    """Collated dataset items (docs/DESIGN.md) → a `Batch` on `device`.

    Normalization happens here, after the uint8 copy, so the host moves a quarter of
    the bytes and the device does the arithmetic. Undecoded frames (--gpu_decode) are
    decoded on `device` first (`clip_to_device`; a no-op for a sample it has already seen).
    """
    sample = clip_to_device(sample, device)
    return Batch(clip=model_input(sample["clip"], mean, std, channels_last),
                 target=sample["target"].to(device, non_blocking=True),
                 audio=sample["audio"].to(device, non_blocking=True).float(),
                 audio_weight=sample["audio_weight"].to(device, non_blocking=True).float(),
                 frame_index=frame_index)
