"""Synthetic videos in the on-disk format of SPEC §1, for benchmarks and demos without data."""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from .audio import AUDIO_DIM


@dataclass(frozen=True)
class SyntheticData:
    video_path: Path
    annotation_path: Path
    audio_path: Path


def realistic_jpeg(rng: np.random.Generator, phase: float, width: int = 320,
                   height: int = 240, quality: int = 75) -> bytes:
    """A JPEG frame whose size is close to real 320×240 video frames (about 13 KB): smooth
    moving colour fields plus sensor-like noise, which is what makes JPEG files large."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = (128 + 60 * np.sin(x / 40 + phase)[..., None] * np.array([1.0, 0.8, 0.6])
            + 40 * np.cos(y / 30 + phase / 2)[..., None])
    image = np.clip(base + rng.normal(0, 11, (height, width, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_video_hdf5(path: Path, jpegs: list[bytes]) -> None:
    """One video file of SPEC §1: dataset `video`, variable-length uint8, one JPEG per item."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        video = f.create_dataset("video", (len(jpegs),), dtype=h5py.vlen_dtype(np.uint8))
        for i, data in enumerate(jpegs):
            video[i] = np.frombuffer(data, dtype=np.uint8)


def write_synthetic_dataset(root: str | Path, n_videos: int, n_frames: int = 120,
                            n_classes: int = 5, seed: int = 0) -> SyntheticData:
    """n_videos fake videos of n_frames realistic 320×240 JPEG frames, an annotation JSON
    (every 4th video "validation", the others "training") and one (512,) audio feature per
    video, under `root` (`hdf5/`, `audio/`, `synthetic.json`)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    # Encoding dominates writing time; a pool of distinct frames, reused at per-video offsets,
    # keeps realistic sizes and decode cost while staying quick to build.
    pool = [realistic_jpeg(rng, phase=k / 4) for k in range(64)]
    labels = [f"class{c:02d}" for c in range(n_classes)]
    database = {}
    for v in range(n_videos):
        label = labels[v % n_classes]
        video_id = f"v_{label}_g{v:04d}"
        jpegs = [pool[(v * 7 + k) % len(pool)] for k in range(n_frames)]
        write_video_hdf5(root / "hdf5" / label / f"{video_id}.hdf5", jpegs)
        feature = root / "audio" / label / f"{video_id}.npy"
        feature.parent.mkdir(parents=True, exist_ok=True)
        np.save(feature, rng.standard_normal(AUDIO_DIM).astype(np.float32))
        database[video_id] = {"subset": "training" if v % 4 else "validation",
                              "annotations": {"label": label, "segment": [1, n_frames + 1]}}
    annotation = root / "synthetic.json"
    annotation.write_text(json.dumps({"labels": labels, "database": database}))
    return SyntheticData(root / "hdf5", annotation, root / "audio")
