"""The built-in demo dataset: real on-disk formats, two teachers that know different things.

Six classes of synthetic videos, the textures STUDENT_CONCEPTS of demo/textures.py: an
object filled with its class's texture drifting over a noisy background. The classes come in
three look-alike pairs (classes 0/1, 2/3, 4/5): within a pair the colours are the same and
only the texture differs, a 4×4 pattern of 2 px cells at a random phase, under per-frame
pixel noise and the training crops. The student sees a few videos per class; the image
teacher learned all N_CONCEPTS textures from its own, larger image set
(demo/image_teacher.py), as the paper's teacher learned objects from ImageNet.

The audio features have five centres: classes 0 and 1 share one sound, so the audio teacher
cannot tell that pair apart; classes 2-5 each have their own. Whether distilling either
teacher helps the student is what the demo measures (docs/DEMO.md).

Everything goes through the project's own pipeline: videos are encoded to `.avi` files,
converted by `util_scripts/generate_video_hdf5.py`, described by an annotation JSON in the
UCF layout, and audio features are per-video `.npy` files (some missing on purpose).
"""
import json
import shutil
from functools import cache
from pathlib import Path

import numpy as np

from demo import textures
from demo.media import encode_video
from util_scripts import generate_video_hdf5
from util_scripts.annotation import database_entry, write_database

CLASSES = [f"tex{c:02d}" for c in textures.STUDENT_CONCEPTS]   # named after their concept
FRAMES = 24
SIZE = 16                   # short side after conversion (the demo's --sample_size)
FPS = 10
VIDEO_STREAM = 0            # the videos' random stream: (seed, VIDEO_STREAM)
AUDIO_CENTRE = {0: 0, 1: 0, 2: 1, 3: 2, 4: 3, 5: 4}   # classes 0 and 1 share one sound
AUDIO_DIM = 512
AUDIO_CENTRE_SCALE = 1.0    # std of each centre's coordinates
AUDIO_NOISE = 1.0           # std of each video's deviation from its centre, per coordinate
MANIFEST = "demo_data.json"


@cache
def _tiles() -> np.ndarray:
    return textures.concept_tiles()


def render_video(label: int, rng: np.random.Generator) -> np.ndarray:
    """(FRAMES, textures.HEIGHT, textures.WIDTH, 3) uint8: a scene of class `label`'s
    texture (textures.render_scene)."""
    return textures.render_scene(textures.STUDENT_CONCEPTS[label], rng, FRAMES, _tiles())


def sound_centres(rng: np.random.Generator) -> np.ndarray:
    """(n_sounds, AUDIO_DIM) float64: one centre per distinct sound of AUDIO_CENTRE."""
    return rng.normal(0, AUDIO_CENTRE_SCALE, (max(AUDIO_CENTRE.values()) + 1, AUDIO_DIM))


def audio_feature(label: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    """(AUDIO_DIM,) float32 stand-in for a PANNs embedding: the class's sound centre plus
    Gaussian noise, through a ReLU (CNN14's embedding is the output of `fc1` + ReLU, so
    real features are non-negative, like the student's pooled features)."""
    feature = centres[AUDIO_CENTRE[label]] + rng.normal(0, AUDIO_NOISE, AUDIO_DIM)
    return np.maximum(feature, 0).astype(np.float32)


def build_demo_dataset(root: Path, train_per_class: int = 16, val_per_class: int = 16,
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
    rng = np.random.default_rng([seed, VIDEO_STREAM])
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
    return {"scenes": textures.design(), "frames": FRAMES, "size": SIZE,
            "audio_centre": {str(k): v for k, v in AUDIO_CENTRE.items()},
            "audio_centre_scale": AUDIO_CENTRE_SCALE, "audio_noise": AUDIO_NOISE,
            "audio_relu": True}
