"""The built-in demo dataset: real on-disk formats, a deliberate cross-modal gap.

Six classes of synthetic videos (a bright square moving over noise). Classes 0 and 1 are
easy to tell apart by eye (colour and direction) but sound alike; classes 2-5 come in
look-alike pairs (2/3 and 4/5 share colour and direction and differ only in speed, under
heavy noise) whose audio embeddings are far apart. A teacher that hears can therefore
tell the student what its eyes barely see; whether that helps the student is what the
demo measures.

Everything goes through the project's own pipeline: videos are encoded to `.avi` files,
converted by `util_scripts/generate_video_hdf5.py`, described by an annotation JSON in
the UCF layout, and audio features are per-video `.npy` files (a few missing on purpose).
"""
from pathlib import Path

import numpy as np

from demo.media import encode_video
from util_scripts import generate_video_hdf5
from util_scripts.annotation import database_entry, write_database

CLASSES = ["red_right", "blue_down", "green_slow", "green_fast", "white_slow", "white_fast"]
COLOURS = {"red": (230, 40, 40), "blue": (40, 60, 230), "green": (40, 200, 60), "white": (230, 230, 230)}
FRAMES, HEIGHT, WIDTH, SQUARE = 24, 48, 64, 12
SIZE = 32                   # short side after conversion (the demo's --sample_size)
AUDIO_GAP = {0: 0, 1: 0, 2: 1, 3: 2, 4: 3, 5: 4}   # classes 0 and 1 share one sound


def class_motion(label: int) -> tuple[tuple[int, int, int], tuple[float, float]]:
    """(colour, velocity in px/frame as (dy, dx)) of a class."""
    name = CLASSES[label]
    colour = COLOURS[name.split("_")[0]]
    velocity = {"red_right": (0.0, 1.6), "blue_down": (1.2, 0.0), "green_slow": (0.6, 0.9),
                "green_fast": (0.9, 1.35), "white_slow": (-0.6, 0.9), "white_fast": (-0.9, 1.35)}[name]
    return colour, velocity


def render_video(label: int, rng: np.random.Generator) -> np.ndarray:
    """(FRAMES, HEIGHT, WIDTH, 3) uint8: the class's square over per-video noise."""
    colour, (vy, vx) = class_motion(label)
    y = rng.uniform(SQUARE, HEIGHT - 2 * SQUARE)
    x = rng.uniform(0, WIDTH / 3)
    background = rng.integers(0, 256, size=3)
    frames = np.empty((FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    for t in range(FRAMES):
        frame = np.clip(background + rng.normal(0, 60, (HEIGHT, WIDTH, 3)), 0, 255)
        top, left = int(y + vy * t) % (HEIGHT - SQUARE), int(x + vx * t) % (WIDTH - SQUARE)
        frame[top:top + SQUARE, left:left + SQUARE] = colour
        frames[t] = frame.astype(np.uint8)
    return frames


def audio_feature(label: int, rng: np.random.Generator, sound_centres: np.ndarray) -> np.ndarray:
    """A 512-d stand-in for a PANNs embedding: the class's sound centre plus noise."""
    return (sound_centres[AUDIO_GAP[label]] + rng.normal(0, 0.5, 512)).astype(np.float32)


def build_demo_dataset(root: Path, train_per_class: int = 16, val_per_class: int = 6,
                       missing_audio: float = 0.1, seed: int = 0) -> dict[str, Path]:
    """Write the demo dataset under `root` (reused when already complete).

    Returns the paths to pass as --video_path, --audio_path and --annotation_path.
    """
    root = Path(root)
    paths = {"video_path": root / "hdf5", "audio_path": root / "audio",
             "annotation_path": root / "demo.json"}
    if paths["annotation_path"].is_file():
        return paths
    rng = np.random.default_rng(seed)
    sound_centres = rng.normal(0, 1, (max(AUDIO_GAP.values()) + 1, 512)) * 1.5
    database = {}
    for label, name in enumerate(CLASSES):
        for k in range(train_per_class + val_per_class):
            subset = "training" if k < train_per_class else "validation"
            video_id = f"v_{name}_{k:02d}"
            video_file = root / "videos" / name / f"{video_id}.avi"
            video_file.parent.mkdir(parents=True, exist_ok=True)
            encode_video(video_file, render_video(label, rng), fps=10)
            if rng.random() >= missing_audio:
                feature_file = paths["audio_path"] / name / f"{video_id}.npy"
                feature_file.parent.mkdir(parents=True, exist_ok=True)
                np.save(feature_file, audio_feature(label, rng, sound_centres))
            database[video_id] = database_entry(subset, name, (1, FRAMES + 1))
    status = generate_video_hdf5.main(["--dir_path", str(root / "videos"), "--dst_path", str(paths["video_path"]),
                                       "--dataset", "ucf101", "--size", str(SIZE), "--n_jobs", "2"])
    if status != 0:
        raise RuntimeError(f"demo video conversion failed (exit {status})")
    write_database(paths["annotation_path"], CLASSES, database)
    return paths
