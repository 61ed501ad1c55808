"""Annotation JSON (SPEC §1, extended in DESIGN.md) → per-sample file paths and segments."""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import h5py

SUBSETS = ("training", "validation", "testing")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Annotation:
    """A loaded annotation file: class names (label index = position) and the raw database."""

    path: Path
    labels: list[str]
    database: dict[str, dict]


@dataclass(frozen=True)
class Sample:
    """One dataset sample (a video, or a segment of one).

    segment: (first, last + 1), 1-based frame numbers of the HDF5 file.
    label: index into `Annotation.labels`, -1 when unlabeled.
    audio_file: the `.npy` feature, None when the file does not exist (no audio).
    """

    sample_id: str
    label: int
    hdf5_file: Path
    audio_file: Path | None
    segment: tuple[int, int]


def load_annotation(path: str | Path) -> Annotation:
    """Read and validate the annotation JSON; every problem is a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist (--annotation_path; build "
                                f"it with util_scripts/ucf101_json.py, see dataset/README.md)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid JSON file ({e})") from None
    if not isinstance(data, dict) or "labels" not in data or "database" not in data:
        raise ValueError(f"{path}: an annotation JSON needs the keys 'labels' and 'database' "
                         f"(SPEC §1)")
    labels, database = data["labels"], data["database"]
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"{path}: 'labels' must be a list of class names")
    if not isinstance(database, dict):
        raise ValueError(f"{path}: 'database' must map sample ids to entries")
    return Annotation(path, labels, database)


def check_n_classes(annotation: Annotation | str | Path, n_classes: int) -> None:
    """Raise a one-line ValueError when --n_classes disagrees with the annotation's label list."""
    if not isinstance(annotation, Annotation):
        annotation = load_annotation(annotation)
    n = len(annotation.labels)
    if n != n_classes:
        raise ValueError(f"--n_classes {n_classes} but {annotation.path} lists {n} labels: "
                         f"pass --n_classes {n}")


def classes_without_audio_folder(annotation: Annotation, audio_path: str | Path) -> list[str]:
    """Labels of `annotation` that have no class folder under `audio_path`, when the audio
    features are laid out by class (`<audio_path>/<label>/<video_id>.npy`, SPEC §1), that
    is when at least one label has a folder there; [] for a flat layout. With --use_audio
    the original kept only the classes that have a folder (SPEC §1: UCF51 out of UCF101)."""
    audio_path = Path(audio_path)
    missing = [label for label in annotation.labels if not (audio_path / label).is_dir()]
    return [] if len(missing) == len(annotation.labels) else missing


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
    if not video_path.is_dir():
        raise FileNotFoundError(f"--video_path {video_path} does not exist "
                                f"(run util_scripts/generate_video_hdf5.py first)")
    if audio_path is not None and not Path(audio_path).is_dir():
        raise FileNotFoundError(f"--audio_path {audio_path} does not exist")
    class_index = {name: i for i, name in enumerate(annotation.labels)}
    entries = [(k, v) for k, v in annotation.database.items()
               if isinstance(v, dict) and v.get("subset") == subset]
    if not entries:
        raise ValueError(f"{annotation.path}: no samples with subset {subset!r}")

    samples: list[Sample] = []
    missing: list[str] = []
    empty: list[str] = []
    for sample_id, entry in entries:
        label, stem = _label_and_stem(annotation, class_index, sample_id, entry)
        hdf5_file = video_path / f"{stem}.hdf5"
        if not hdf5_file.is_file():
            missing.append(sample_id)
            continue
        segment = _segment(annotation, sample_id, entry, hdf5_file)
        if segment is None or segment[1] <= segment[0]:
            empty.append(sample_id)
            continue
        audio_file = None
        if audio_path is not None:
            candidate = Path(audio_path) / f"{stem}.npy"
            audio_file = candidate if candidate.is_file() else None
        samples.append(Sample(sample_id, label, hdf5_file, audio_file, segment))

    for ids, why in ((missing, f"have no HDF5 file under {video_path}"),
                     (empty, "have no frames")):
        if not ids:
            continue
        message = (f"{annotation.path}: {len(ids)} of {len(entries)} {subset!r} samples {why} "
                   f"(first: {', '.join(ids[:5])})")
        if strict:
            raise FileNotFoundError(f"{message}; --strict_data makes this an error: supply those "
                                    f"videos or drop --strict_data to leave them out")
        warnings.warn(f"{message} and are left out", stacklevel=2)
    if not samples:
        raise FileNotFoundError(f"{annotation.path}: none of the {subset!r} samples could be "
                                f"found under {video_path} (check --video_path)")
    if audio_path is not None:
        n_no_audio = sum(s.audio_file is None for s in samples)
        logger.info("%s %s: %d of %d samples have no audio feature under %s",
                    annotation.path, subset, n_no_audio, len(samples), audio_path)
    return samples


def _label_and_stem(annotation: Annotation, class_index: dict[str, int], sample_id: str,
                    entry: dict) -> tuple[int, str]:
    annotations = entry.get("annotations") or {}
    name = annotations.get("label")
    if name is None:
        label = -1
    elif name in class_index:
        label = class_index[name]
    else:
        raise ValueError(f"{annotation.path}: sample {sample_id} has label {name!r}, "
                         f"which is not in 'labels'")
    stem = entry.get("video")
    if stem is None:
        if name is None:
            raise ValueError(f"{annotation.path}: unlabeled sample {sample_id} needs a 'video' "
                             f"entry (the HDF5 path stem)")
        stem = f"{name}/{sample_id}"
    return label, stem


def _segment(annotation: Annotation, sample_id: str, entry: dict,
             hdf5_file: Path) -> tuple[int, int] | None:
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
        raise ValueError(f"{annotation.path}: sample {sample_id} has segment {segment!r}; "
                         f"expected [first_frame, last_frame + 1], 1-based integers")
    return int(segment[0]), int(segment[1])
