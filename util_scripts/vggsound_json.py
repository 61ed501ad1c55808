"""Build the VGGSound annotation JSON (SPEC §9): one sample per 10-second clip file.

    python util_scripts/vggsound_json.py --csv_path dataset/VGGSound/vggsound.csv \\
        --video_path dataset/VGGSound/hdf5data --dst_path dataset/VGGSound

`vggsound.csv` rows are `youtube_id,start_seconds,label,train|test` (no header; labels
may hold commas inside double quotes). The clip stem is `--file_pattern` filled with
`youtube_id`, `start` (int seconds) and `label`; its HDF5 file is looked up flat,
`<video_path>/<stem>.hdf5`, then per class, `<video_path>/<label>/<stem>.hdf5`. "train"
rows give the "training" subset, "test" rows "validation". Clips not on disk are
reported and left out. Output: `vggsound.json` in --dst_path (or --dst_path itself when
it ends with .json).
"""
import argparse
import csv
import sys
from pathlib import Path
from typing import NamedTuple

if __package__ in (None, ""):  # run as `python util_scripts/<name>.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from errors import ArgumentParser, UserError, require_file
from util_scripts.annotation import (database_entry, frame_count, report_missing, require_dir,
                                     run_cli, save_annotation)

SUBSETS = {"train": "training", "test": "validation"}
DEFAULT_PATTERN = "{youtube_id}_{start:06d}"


class Clip(NamedTuple):
    """One row of vggsound.csv."""
    youtube_id: str
    start: int
    label: str
    subset: str  # "training" | "validation"


def read_vggsound_csv(path: Path) -> list[Clip]:
    """The rows of `vggsound.csv` (CSV quoting rules, so labels may contain commas)."""
    require_file(path, "--csv_path", "the official vggsound.csv", fix=" (pass the official vggsound.csv)")
    clips = []
    with open(path, newline="") as f:
        for number, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            try:
                youtube_id, start, label, split = row
                clips.append(Clip(youtube_id, int(float(start)), label, SUBSETS[split.strip()]))
            except (ValueError, KeyError) as e:
                raise UserError(f"{path}:{number}: expected `youtube_id,start_seconds,label,"
                                f"train|test`, got {row!r}") from e
    return clips


def clip_stem(pattern: str, clip: Clip) -> str:
    """File stem of `clip` given `--file_pattern` (fields youtube_id, start, label)."""
    try:
        return pattern.format(youtube_id=clip.youtube_id, start=clip.start, label=clip.label)
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"--file_pattern {pattern!r} cannot be filled ({e}); it may use "
                        "{youtube_id}, {start} and {label}") from e


def build_vggsound(clips: list[Clip], video_path: Path,
                   file_pattern: str = DEFAULT_PATTERN) -> tuple[dict, list[str]]:
    """Annotation JSON of DESIGN.md for `clips`, and the stems of clips not on disk.

    labels = sorted unique labels of all rows (309 in the official file), independent of
    which clips are on disk. Sample id = clip stem; `video` = its HDF5 stem relative to
    `video_path`; segment = the whole clip [1, n_frames + 1]. A stem listed twice keeps
    its first row.
    """
    labels = sorted({clip.label for clip in clips})
    database, missing = {}, []
    for clip in clips:
        stem = clip_stem(file_pattern, clip)
        if stem in database:
            continue
        for video in (stem, f"{clip.label}/{stem}"):
            hdf5 = video_path / f"{video}.hdf5"
            if hdf5.is_file():
                database[stem] = database_entry(clip.subset, clip.label,
                                                (1, frame_count(hdf5) + 1), video)
                break
        else:
            missing.append(stem)
    return {"labels": labels, "database": database}, missing


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv_path", type=Path, required=True, help="official vggsound.csv")
    parser.add_argument("--video_path", type=Path, required=True,
                        help="HDF5 root: <video_path>/<stem>.hdf5 or <label>/<stem>.hdf5")
    parser.add_argument("--dst_path", type=Path, required=True,
                        help="folder for vggsound.json, or a .json file path")
    parser.add_argument("--file_pattern", default=DEFAULT_PATTERN,
                        help="clip file stem from {youtube_id}, {start}, {label} "
                             "(default %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit code."""
    args = _parse_args(argv)

    def build() -> None:
        require_dir(args.video_path, "--video_path",
                    "run util_scripts/generate_video_hdf5.py first, see dataset/README.md")
        clips = read_vggsound_csv(args.csv_path)
        data, missing = build_vggsound(clips, args.video_path, args.file_pattern)
        report_missing(missing, len(data["database"]) + len(missing), args.video_path)
        if not data["database"]:
            raise UserError(f"no clip has an HDF5 file under --video_path {args.video_path} "
                            f"(names from --file_pattern {args.file_pattern!r})")
        save_annotation(args.dst_path, "vggsound.json", data, "clips")

    return run_cli(build)


if __name__ == "__main__":
    sys.exit(main())
