"""Decoding a batch's JPEG frames on the training device and building its clips there
(--gpu_decode; the loader side is `encoded`).

The whole batch is decoded with one `torchvision.io.decode_jpeg` call: nvJPEG on a CUDA
device, libjpeg-turbo on the CPU, so the same code runs (and is tested) without a GPU. Each
clip is then cropped, resized and flipped as `spatial.ClipTransform.finish` does, on the same
device. The resize runs in float32 and is rounded to uint8, where the loader's uint8 kernel
rounds after each of its two passes: the two paths differ by at most one grey level.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg

from .encoded import EncodedBatch
from .hdf5_clip import BadSampleError, _one_line, decode_frames
from .spatial import CropPlan
from .video_dataset import UnreadableDataError


def clip_to_device(sample: dict, device: torch.device) -> dict:
    """A collated batch (`collate`) → the same batch with `clip` (B, 3, T, S, S) uint8 on
    `device`.

    A batch of decoded clips has its clip copied there. A batch of undecoded frames
    (`encoded`, an EncodedBatch) is decoded there (`decode_clips`), the clip in
    channels_last_3d memory; a clip that cannot be decoded is replaced, with every other
    per-sample field, by the next decodable clip of the batch (cyclically) and recorded in
    `bad`, as the loader records the samples it replaces. Raises UnreadableDataError when no
    clip of the batch can be decoded.
    """
    if "encoded" not in sample:
        return sample | {"clip": sample["clip"].to(device, non_blocking=True)}
    encoded: EncodedBatch = sample["encoded"]
    clip, bad = decode_clips(encoded, device)
    out = {key: value for key, value in sample.items() if key != "encoded"} | {"clip": clip}
    if not bad:
        return out
    n = len(encoded)
    good = [b for b in range(n) if b not in bad]
    if not good:
        raise UnreadableDataError(f"no clip of a batch of {n} could be decoded, the last: "
                                  f"{bad[n - 1]} (check the HDF5 files under the video path)")
    source = torch.tensor([b if b in good else min(good, key=lambda g: (g - b) % n)
                           for b in range(n)])
    for key, value in out.items():
        if isinstance(value, Tensor) and value.shape[:1] == (n,):
            out[key] = value[source.to(value.device)]
    out["bad"] = [*sample["bad"], *bad.values()]
    return out


def decode_clips(encoded: EncodedBatch, device: torch.device) -> tuple[Tensor, dict[int, str]]:
    """Decode every frame of the batch on `device` and build its clips.

    Returns the clip (B, 3, T, S, S) uint8 on `device` in channels_last_3d memory, clip b's
    frame t = frame inverse[b, t] of the batch with the plan of clip b applied (box, bilinear
    antialiased resize, S × S crop, flip; SPEC §4), and `bad`: {b: "<file>: <reason>"} for
    the clips that could not be decoded, whose rows of the clip are undefined. The reason
    comes from the CPU decoder (the frame it fails on) when it fails too; else it says that
    only `device`'s decoder fails.
    """
    device = torch.device(device)
    jpegs = encoded.frames()
    if device.type == "cuda":
        # nvJPEG writes on a stream of its own, into memory the caching allocator may have
        # just taken back from tensors that work still queued on this stream reads.
        torch.cuda.current_stream(device).synchronize()
    try:
        # One call for the batch: nvJPEG decodes it as one batch on the GPU.
        decoded = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        decoded = None   # some frame is broken: each clip is decoded alone below to find it
    size = encoded.size
    frames = torch.empty((len(jpegs), size, size, 3), dtype=torch.uint8, device=device)
    bad: dict[int, str] = {}
    for b, plan in enumerate(encoded.plans):
        start, end = int(encoded.first[b]), int(encoded.first[b + 1])
        if decoded is not None:
            clip_frames = decoded[start:end]
        else:
            try:
                clip_frames = decode_jpeg(jpegs[start:end], mode=ImageReadMode.RGB, device=device)
            except RuntimeError as e:
                bad[b] = _reason(encoded, b, device, _one_line(e))
                continue
        if any(tuple(f.shape[-2:]) != encoded.frame_sizes[b] for f in clip_frames):
            bad[b] = _reason(encoded, b, device, "frames of another size than the first "
                                                 "frame's JPEG header gives")
            continue
        frames[start:end] = finish(clip_frames, plan, size)
    clip = frames[encoded.inverse.to(device)]
    return clip.permute(0, 4, 1, 2, 3), bad


def finish(frames: list[Tensor], plan: CropPlan, size: int) -> Tensor:
    """U decoded (3, H, W) uint8 frames of one clip → (U, S, S, 3) uint8: the plan's box,
    resized to plan.resize (bilinear, antialiased, in float32, rounded to the nearest grey
    level), the S × S crop at plan.crop, mirrored when plan.flip (`ClipTransform.finish`)."""
    top, left, h, w = plan.box
    box = torch.stack([f[:, top:top + h, left:left + w] for f in frames]).float()
    out = F.interpolate(box, size=plan.resize, mode="bilinear", antialias=True,
                        align_corners=False)
    crop_top, crop_left = plan.crop
    out = out[..., crop_top:crop_top + size, crop_left:crop_left + size]
    if plan.flip:
        out = out.flip(-1)
    return out.round().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def _reason(encoded: EncodedBatch, b: int, device: torch.device, problem: str) -> str:
    """The bad-sample record of clip b, which `device`'s decoder failed on with `problem`."""
    try:
        decode_frames(encoded.clip(b))
    except BadSampleError as e:
        return str(e)
    return (f"{encoded.paths[b]}: the {device.type} JPEG decoder fails where the CPU one "
            f"does not ({problem})")

