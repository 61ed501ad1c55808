"""Annotation JSON (SPEC §1, extended in DESIGN.md) → per-sample file paths and segments."""
from __future__ import annotations

import json
import logging
import os
import stat
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import h5py

from errors import MissingFileError, UserError, require_file, require_folder

TRAINING, VALIDATION, TESTING = "training", "validation", "testing"
SUBSETS = (TRAINING, VALIDATION, TESTING)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Annotation:
    """A loaded annotation file: class names (label index = position) and the raw database."""

    path: Path
    labels: list[str]
    database: dict[str, dict]


class Sample(NamedTuple):
    """One dataset sample (a video, or a segment of one).

    segment: (first, last + 1), 1-based frame numbers of the HDF5 file.
    label: index into `Annotation.labels`, -1 when unlabeled.
    hdf5_path, audio_path: the files as strings (a pathlib object per sample costs more than
        looking the file up, at 100,000s of samples); audio_path None when the `.npy`
        feature does not exist (no audio). `hdf5_file` / `audio_file`: the same as Paths.
    """

    sample_id: str
    label: int
    hdf5_path: str
    audio_path: str | None
    segment: tuple[int, int]

    @property
    def hdf5_file(self) -> Path:
        return Path(self.hdf5_path)

    @property
    def audio_file(self) -> Path | None:
        return None if self.audio_path is None else Path(self.audio_path)


def load_annotation(path: str | Path) -> Annotation:
    """Read and validate the annotation JSON; every problem is a one-line error naming the file."""
    path = Path(path)
    require_file(path, "annotation file", "a JSON annotation file (--annotation_path, e.g. ucf51_01.json; built by "
                 "util_scripts/ucf101_json.py, see dataset/README.md)", fix=" (--annotation_path; build it with "
                 "util_scripts/ucf101_json.py, see dataset/README.md)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a valid JSON file ({e})") from None
    if not isinstance(data, dict) or "labels" not in data or "database" not in data:
        raise UserError(f"{path}: an annotation JSON needs the keys 'labels' and 'database' "
                        f"(SPEC §1)")
    labels, database = data["labels"], data["database"]
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise UserError(f"{path}: 'labels' must be a list of class names")
    if not isinstance(database, dict):
        raise UserError(f"{path}: 'database' must map sample ids to entries")
    return Annotation(path, labels, database)


def require_video_folder(video_path: str | Path | None) -> None:
    """--video_path names an existing folder (UserError, MissingFileError when it is not there)."""
    if video_path is None:
        raise UserError("--video_path is required: the folder of the per-video HDF5 files (see dataset/README.md)")
    require_folder(video_path, "--video_path", "the folder of the per-video HDF5 files",
                   fix=" (run util_scripts/generate_video_hdf5.py first, see dataset/README.md)")


def require_audio_folder(audio_path: str | Path) -> None:
    """--audio_path names an existing folder (UserError, MissingFileError when it is not there)."""
    require_folder(audio_path, "--audio_path", "the folder of the audio features (<label>/<video_id>.npy)",
                   fix=" (unpack audiocnn14embed512_features.tar.gz, see dataset/README.md)")


def check_n_classes(annotation: Annotation | str | Path, n_classes: int) -> None:
    """Raise a one-line UserError when --n_classes disagrees with the annotation's label list."""
    if not isinstance(annotation, Annotation):
        annotation = load_annotation(annotation)
    n = len(annotation.labels)
    if n != n_classes:
        raise UserError(f"--n_classes {n_classes} but {annotation.path} lists {n} labels: "
                        f"pass --n_classes {n}")


def classes_without_audio_folder(annotation: Annotation, audio_path: str | Path) -> list[str]:
    """Labels of `annotation` that have no class folder under `audio_path`, when the audio
    features are laid out by class (`<audio_path>/<label>/<video_id>.npy`, SPEC §1), that
    is when at least one label has a folder there; [] for a flat layout. With --use_audio
    the original kept only the classes that have a folder (SPEC §1: UCF51 out of UCF101)."""
    audio_path = Path(audio_path)
    missing = [label for label in annotation.labels if not (audio_path / label).is_dir()]
    return [] if len(missing) == len(annotation.labels) else missing


def check_audio_classes(annotation: Annotation, audio_path: Path | None) -> None:
    """With audio: the audio features exist, and every class of the annotation has its
    folder when they are laid out by class. The original kept only the classes with a
    folder but with the annotation's class ids (UCF101's, up to 100, under --n_classes 51)
    and validated on every class; the paper's setting is the UCF51 annotation, built from
    the audio folders, so a UCF101 annotation is a UserError that names it."""
    if audio_path is None:
        raise UserError("--use_audio needs --audio_path, the folder of the audio features "
                        "(unpack audiocnn14embed512_features.tar.gz, see dataset/README.md)")
    require_audio_folder(audio_path)
    missing = classes_without_audio_folder(annotation, audio_path)
    if missing:
        n = len(annotation.labels)
        raise UserError(f"--use_audio: {len(missing)} of the {n} classes of {annotation.path} have no folder under "
                        f"--audio_path {audio_path} (first: {', '.join(missing[:3])}); the paper trains only the "
                        f"classes with audio: build that annotation with util_scripts/ucf101_json.py --audio_path "
                        f"{audio_path} (it writes ucf51_01.json for split 1) and pass it with "
                        f"--n_classes {n - len(missing)}")


def resolve_samples(annotation: Annotation, subset: str, video_path: str | Path,
                    audio_path: str | Path | None = None, strict: bool = False) -> list[Sample]:
    """The samples of `subset`, in file order, with their HDF5 / audio files resolved.

    The HDF5 file is `<video_path>/<stem>.hdf5` and the audio feature `<audio_path>/<stem>.npy`
    with stem = entry["video"] or `<label>/<sample_id>`. Samples whose HDF5 file is missing
    (or whose segment is empty) are left out with a single warning, or raise when `strict`.
    Audio existence is checked here, once, so loading never touches the file system for it.
    A sample without a segment covers all frames of its HDF5 file (read here).
    """
    if subset not in SUBSETS:
        raise ValueError(f"subset {subset!r} is not one of {', '.join(SUBSETS)}")
    video_path = Path(video_path)
    require_video_folder(video_path)
    if audio_path is not None:
        require_audio_folder(audio_path)
    class_index = {name: i for i, name in enumerate(annotation.labels)}
    entries = [(k, v) for k, v in annotation.database.items()
               if isinstance(v, dict) and v.get("subset") == subset]
    if not entries:
        counts = Counter(str(entry.get("subset")) for entry in annotation.database.values() if isinstance(entry, dict))
        held = ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "none"
        raise UserError(f"{annotation.path}: no samples with subset {subset!r} (its samples by "
                        f"subset: {held})")

    # Paths are built and tested as strings: pathlib costs several times the stat call
    # itself, which matters at 100,000s of samples.
    video_root = os.path.join(os.fspath(video_path), "")
    audio_root = None if audio_path is None else os.path.join(os.fspath(audio_path), "")
    samples: list[Sample] = []
    missing: list[str] = []
    empty: list[str] = []
    for sample_id, entry in entries:
        label, stem = _label_and_stem(annotation, class_index, sample_id, entry)
        hdf5_file = f"{video_root}{stem}.hdf5"
        if not _is_file(hdf5_file):
            missing.append(sample_id)
            continue
        segment = _segment(annotation, sample_id, entry, hdf5_file)
        if segment is None or segment[1] <= segment[0]:
            empty.append(sample_id)
            continue
        audio_file = None
        if audio_root is not None:
            candidate = f"{audio_root}{stem}.npy"
            audio_file = candidate if _is_file(candidate) else None
        samples.append(Sample(sample_id, label, hdf5_file, audio_file, segment))

    for ids, why in ((missing, f"have no HDF5 file under {video_path}"),
                     (empty, "have no frames")):
        if not ids:
            continue
        message = (f"{annotation.path}: {len(ids)} of {len(entries)} {subset!r} samples {why} "
                   f"(first: {', '.join(ids[:5])})")
        if strict:
            raise MissingFileError(f"{message}; --strict_data makes this an error: supply those "
                                   f"videos or drop --strict_data to leave them out")
        warnings.warn(f"{message} and are left out", stacklevel=2)
    if not samples:
        raise MissingFileError(f"{annotation.path}: none of the {subset!r} samples could be "
                               f"found under {video_path} (check --video_path)")
    if audio_path is not None:
        n_no_audio = sum(s.audio_path is None for s in samples)
        logger.info("%s %s: %d of %d samples have no audio feature under %s",
                    annotation.path, subset, n_no_audio, len(samples), audio_path)
    return samples


def _is_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _label_and_stem(annotation: Annotation, class_index: dict[str, int], sample_id: str,
                    entry: dict) -> tuple[int, str]:
    annotations = entry.get("annotations") or {}
    name = annotations.get("label")
    if name is None:
        label = -1
    elif name in class_index:
        label = class_index[name]
    else:
        raise UserError(f"{annotation.path}: sample {sample_id} has label {name!r}, "
                        f"which is not in 'labels'")
    stem = entry.get("video")
    if stem is None:
        if name is None:
            raise UserError(f"{annotation.path}: unlabeled sample {sample_id} needs a 'video' "
                            f"entry (the HDF5 path stem)")
        stem = f"{name}/{sample_id}"
    return label, stem


def _segment(annotation: Annotation, sample_id: str, entry: dict,
             hdf5_file: str) -> tuple[int, int] | None:
    segment = (entry.get("annotations") or {}).get("segment", entry.get("segment"))
    if segment is None:
        # Unlabeled test videos may carry no segment: they use every frame of the file.
        try:
            with h5py.File(hdf5_file, "r") as f:
                return 1, len(f["video"]) + 1
        except (OSError, KeyError):
            return None
    if (not isinstance(segment, (list, tuple)) or len(segment) != 2
            or not all(isinstance(x, int) for x in segment) or segment[0] < 1):
        raise UserError(f"{annotation.path}: sample {sample_id} has segment {segment!r}; "
                        f"expected [first_frame, last_frame + 1], 1-based integers")
    return int(segment[0]), int(segment[1])
