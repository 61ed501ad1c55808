"""Shared pieces of the annotation JSON builders (format: SPEC §1, docs/DESIGN.md)."""
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import h5py

from errors import UserError


def frame_count(path: Path) -> int:
    """Number of frames (items of the `video` dataset) in the video HDF5 file `path`."""
    try:
        with h5py.File(path, "r") as f:
            return len(f["video"])
    except (OSError, KeyError) as e:
        raise UserError(f"{path} is not a video HDF5 file ({e}); delete it and rerun "
                        "util_scripts/generate_video_hdf5.py") from e


def require_dir(path: Path, flag: str, hint: str) -> None:
    """Raise UserError unless `path` (given by option `flag`) is an existing folder."""
    if not path.is_dir():
        raise UserError(f"{flag} {path} is not a folder ({hint})")


def database_entry(subset: str, label: str | None, segment: tuple[int, int],
                   video: str | None = None) -> dict:
    """One `database` value: 1-based `segment` [first_frame, last_frame + 1]; label None
    leaves the sample unlabeled; `video` is the HDF5 stem relative to the video root."""
    annotations: dict = {"segment": [int(segment[0]), int(segment[1])]}
    if label is not None:
        annotations = {"label": label, **annotations}
    entry: dict = {"subset": subset, "annotations": annotations}
    if video is not None:
        entry["video"] = video
    return entry


def write_database(path: Path, labels: list[str], database: dict) -> None:
    """Write `{"labels": labels, "database": database}` to `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w") as f:
        json.dump({"labels": labels, "database": database}, f)
    os.replace(temporary, path)


def report_missing(missing: list[str], total: int, where: Path, show: int = 5,
                   stream: TextIO | None = None) -> None:
    """Tell the user which of `total` listed videos have no HDF5 under `where`."""
    if not missing:
        return
    first = ", ".join(missing[:show]) + (", ..." if len(missing) > show else "")
    print(f"warning: {len(missing)} of {total} listed videos have no HDF5 file under "
          f"{where} and are left out: {first}", file=stream or sys.stderr)


def json_destination(dst_path: Path, default_name: str) -> Path:
    """`dst_path` itself when it names a `.json` file, else `<dst_path>/<default_name>`."""
    return dst_path if dst_path.suffix == ".json" else dst_path / default_name


def run_cli(build: Callable[[], None]) -> int:
    """Run a builder; a UserError becomes `error: ...` on stderr and exit code 2."""
    try:
        build()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def save_annotation(dst_path: Path, default_name: str, data: dict, what: str) -> None:
    """Write a built annotation (`{"labels", "database"}`) to `dst_path` (a folder, where it
    is named `default_name`, or a .json path) and say what was written."""
    destination = json_destination(dst_path, default_name)
    write_database(destination, data["labels"], data["database"])
    print(f"{destination}: {len(data['labels'])} classes, {len(data['database'])} {what}", file=sys.stderr)
