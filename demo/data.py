"""The built-in demo dataset: real on-disk formats, a deliberate cross-modal gap.

Six classes of synthetic videos, a coloured square moving over a noisy background:

- classes 0 and 1 (red moving right, blue moving down) are easy to tell apart by eye but
  sound alike: their audio features share one centre, so the audio teacher cannot tell
  them apart;
- classes 2-5 come in look-alike pairs (2/3 green, 4/5 yellow; same colour and speed, only
  the vertical direction differs, a few pixels over a clip, under per-frame pixel noise)
  whose audio features have four distinct centres.

So the student's visual cue is weak exactly where the audio teacher is informative, and
strong where it is not. Whether distilling the audio teacher helps the student is what the
demo measures (docs/DEMO.md).

Everything goes through the project's own pipeline: videos are encoded to `.avi` files,
converted by `util_scripts/generate_video_hdf5.py`, described by an annotation JSON in the
UCF layout, and audio features are per-video `.npy` files (some missing on purpose).
"""
import json
import shutil
from pathlib import Path

import numpy as np

from demo.media import encode_video
from util_scripts import generate_video_hdf5
from util_scripts.annotation import database_entry, write_database

CLASSES = ["red_right", "blue_down", "green_down", "green_up", "yellow_down", "yellow_up"]
COLOURS = {"red": (230, 40, 40), "blue": (40, 60, 230), "green": (40, 200, 60), "yellow": (230, 210, 40)}
# Velocity (dy, dx) in px/frame at the stored resolution. Each look-alike pair differs only
# in the sign of dy (down or up; horizontal flips during training leave dy alone).
VELOCITY = {"red_right": (0.0, 0.8), "blue_down": (0.8, 0.0),
            "green_down": (0.5, 0.5), "green_up": (-0.5, 0.5),
            "yellow_down": (0.5, -0.5), "yellow_up": (-0.5, -0.5)}
SPEED_JITTER = 0.1          # per-video relative speed variation (uniform ±)
FRAMES, HEIGHT, WIDTH, SQUARE = 24, 16, 20, 5
BACKGROUND = (40.0, 160.0)  # range of the per-video grey level (0-255)
PIXEL_NOISE = 40.0          # std of the per-frame, per-pixel Gaussian noise (0-255 scale)
SIZE = 16                   # short side after conversion (the demo's --sample_size)
FPS = 10
AUDIO_CENTRE = {0: 0, 1: 0, 2: 1, 3: 2, 4: 3, 5: 4}   # classes 0 and 1 share one sound
AUDIO_DIM = 512
AUDIO_CENTRE_SCALE = 1.0    # std of each centre's coordinates
AUDIO_NOISE = 1.0           # std of each video's deviation from its centre, per coordinate
MANIFEST = "demo_data.json"


def class_motion(label: int) -> tuple[tuple[int, int, int], tuple[float, float]]:
    """(RGB colour, velocity (dy, dx) in px/frame) of class `label`."""
    name = CLASSES[label]
    return COLOURS[name.split("_")[0]], VELOCITY[name]


def bounce(start: float, step: float, t: np.ndarray, span: float) -> np.ndarray:
    """Positions start + step·t reflected into [0, span] (a square bouncing off the walls)."""
    phase = np.mod(start + step * t, 2 * span)
    return span - np.abs(phase - span)


def render_video(label: int, rng: np.random.Generator) -> np.ndarray:
    """(FRAMES, HEIGHT, WIDTH, 3) uint8: the class's square bouncing over a noisy grey
    background.

    Per video: background grey level, start position and a ±SPEED_JITTER speed factor; per
    frame: fresh pixel noise, so motion has to be read across frames, not from one.
    """
    colour, (vy, vx) = class_motion(label)
    speed = 1.0 + rng.uniform(-SPEED_JITTER, SPEED_JITTER)
    t = np.arange(FRAMES)
    tops = bounce(rng.uniform(0, HEIGHT - SQUARE), speed * vy, t, HEIGHT - SQUARE).round().astype(int)
    lefts = bounce(rng.uniform(0, WIDTH - SQUARE), speed * vx, t, WIDTH - SQUARE).round().astype(int)
    background = rng.uniform(*BACKGROUND)
    frames = np.clip(background + rng.normal(0, PIXEL_NOISE, (FRAMES, HEIGHT, WIDTH, 1)), 0, 255)
    frames = np.repeat(frames, 3, axis=-1)
    for k, (top, left) in enumerate(zip(tops, lefts)):
        frames[k, top:top + SQUARE, left:left + SQUARE] = colour
    return frames.astype(np.uint8)


def sound_centres(rng: np.random.Generator) -> np.ndarray:
    """(n_sounds, AUDIO_DIM) float64: one centre per distinct sound of AUDIO_CENTRE."""
    return rng.normal(0, AUDIO_CENTRE_SCALE, (max(AUDIO_CENTRE.values()) + 1, AUDIO_DIM))


def audio_feature(label: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    """(AUDIO_DIM,) float32 stand-in for a PANNs embedding: the class's sound centre plus
    Gaussian noise, through a ReLU (CNN14's embedding is the output of `fc1` + ReLU, so
    real features are non-negative, like the student's pooled features)."""
    feature = centres[AUDIO_CENTRE[label]] + rng.normal(0, AUDIO_NOISE, AUDIO_DIM)
    return np.maximum(feature, 0).astype(np.float32)


def build_demo_dataset(root: Path, train_per_class: int = 48, val_per_class: int = 16,
                       missing_audio: float = 0.1, seed: int = 0) -> dict[str, Path]:
    """Write the demo dataset under `root`; reused when a complete one with the same
    parameters is there, rebuilt otherwise.

    Layout: `videos/<class>/<id>.avi` (the source videos), `hdf5/<class>/<id>.hdf5`,
    `audio/<class>/<id>.npy` (missing for about `missing_audio` of the videos, drawn at
    random), `demo.json` (annotation; the first `train_per_class` videos of each class are
    "training", the next `val_per_class` "validation"), and `demo_data.json` (the
    parameters, written last: its presence marks a complete dataset).

    Returns the paths to pass as --video_path, --audio_path and --annotation_path.
    """
    root = Path(root)
    paths = {"video_path": root / "hdf5", "audio_path": root / "audio",
             "annotation_path": root / "demo.json"}
    params = json.loads(json.dumps({"train_per_class": train_per_class, "val_per_class": val_per_class,
                                    "missing_audio": missing_audio, "seed": seed, "design": design()}))
    manifest = root / MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text()) == params:
        return paths
    for stale in ("videos", "hdf5", "audio", "demo.json", MANIFEST):
        target = root / stale
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    centres = sound_centres(rng)
    database = {}
    for label, name in enumerate(CLASSES):
        # One audio folder per class, as in the released features, even if every file of
        # the class is missing: --use_audio takes a class without a folder for a mistake.
        (paths["audio_path"] / name).mkdir(parents=True, exist_ok=True)
        for k in range(train_per_class + val_per_class):
            subset = "training" if k < train_per_class else "validation"
            video_id = f"v_{name}_{k:03d}"
            video_file = root / "videos" / name / f"{video_id}.avi"
            video_file.parent.mkdir(parents=True, exist_ok=True)
            encode_video(video_file, render_video(label, rng), fps=FPS)
            feature = audio_feature(label, rng, centres)
            if rng.random() >= missing_audio:
                np.save(paths["audio_path"] / name / f"{video_id}.npy", feature)
            database[video_id] = database_entry(subset, name, (1, FRAMES + 1))
    status = generate_video_hdf5.main(["--dir_path", str(root / "videos"), "--dst_path", str(paths["video_path"]),
                                       "--dataset", "ucf101", "--size", str(SIZE), "--n_jobs", "2"])
    if status != 0:
        raise RuntimeError(f"demo video conversion failed (exit {status})")
    write_database(paths["annotation_path"], CLASSES, database)
    manifest.write_text(json.dumps(params, indent=2) + "\n")
    return paths


def design() -> dict:
    """The constants that shape the data, recorded in the manifest so that a change of
    design rebuilds the dataset."""
    return {"velocity": VELOCITY, "speed_jitter": SPEED_JITTER, "frames": FRAMES,
            "height": HEIGHT, "width": WIDTH, "square": SQUARE, "background": BACKGROUND,
            "pixel_noise": PIXEL_NOISE,
            "size": SIZE, "audio_centre": {str(k): v for k, v in AUDIO_CENTRE.items()},
            "audio_centre_scale": AUDIO_CENTRE_SCALE, "audio_noise": AUDIO_NOISE,
            "audio_relu": True}
