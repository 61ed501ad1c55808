"""Build the ActivityNet v1.3 annotation JSON (SPEC §9): one sample per annotated segment.

    python util_scripts/activitynet_json.py \\
        --annotation_path dataset/ActivityNet/activity_net.v1-3.min.json \\
        --video_path dataset/ActivityNet/hdf5data --dst_path dataset/ActivityNet

Videos are flat: `<video_path>/v_<id>.hdf5` (the usual download name `v_<id>.mp4`
converted by generate_video_hdf5.py); `<video_path>/<id>.hdf5` is accepted too. A video's
frame rate is its HDF5 frame count divided by the official duration. Segment k of video
`<id>` becomes sample `<id>_<k>` (k counts from 0 in the file's order); a testing video
becomes one unlabeled sample `<id>` covering the whole video. Output: `activitynet.json`
in --dst_path (or --dst_path itself when it ends with .json).
"""
import argparse
import json
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python util_scripts/<name>.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from errors import ArgumentParser, UserError
from util_scripts.annotation import (database_entry, frame_count, report_missing, require_dir,
                                     run_cli, save_annotation)

_ROUNDING = 1e-6  # frames; far below one frame, far above float error


def segment_frames(start: float, end: float, fps: float, n_frames: int) -> tuple[int, int]:
    """1-based [first_frame, last_frame + 1] of the segment [start, end] seconds.

    Frame f (1-based) covers [(f - 1) / fps, f / fps): the first frame is the one shown at
    `start`, the last the one still shown just before `end`, clipped to [1, n_frames].
    An empty result (first >= last + 1) means the segment lies outside the video.
    """
    # fps = n_frames / duration is rarely exact: a product like 49.999999 means frame 50.
    first = max(1, math.floor(start * fps + _ROUNDING) + 1)
    last = min(n_frames, math.ceil(end * fps - _ROUNDING))
    return first, last + 1


def hdf5_stem(video_path: Path, video_id: str) -> str | None:
    """Stem of the HDF5 file of ActivityNet video `video_id` (`v_<id>` or `<id>`), or None."""
    for stem in (f"v_{video_id}", video_id):
        if (video_path / f"{stem}.hdf5").is_file():
            return stem
    return None


def load_activitynet(path: Path) -> dict:
    """The `database` of the official ActivityNet JSON file `path`."""
    try:
        with open(path) as f:
            database = json.load(f)["database"]
    except FileNotFoundError as e:
        raise UserError(f"--annotation_path {path} not found (the official "
                        "activity_net.v1-3.min.json)") from e
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not an ActivityNet annotation file with a "
                        "'database' entry") from e
    return database


def build_activitynet(database: dict, video_path: Path) -> tuple[dict, list[str], list[str]]:
    """Annotation JSON of DESIGN.md from the official ActivityNet `database`.

    database: {id: {"subset", "duration" (s), "annotations": [{"label", "segment": [s, e]}]}}.
    video_path: HDF5 root (flat, see the module docstring).
    Returns (json, ids of videos without HDF5, ids of segments that fall outside their video).
    labels = sorted unique annotation labels of the whole file (200 for v1.3), so label
    indices do not depend on which videos are on disk.
    """
    labels = sorted({a["label"] for video in database.values()
                     for a in video.get("annotations", [])})
    samples, missing, outside = {}, [], []
    for video_id, video in database.items():
        stem = hdf5_stem(video_path, video_id)
        if stem is None:
            missing.append(video_id)
            continue
        n_frames = frame_count(video_path / f"{stem}.hdf5")
        if video["subset"] == "testing":
            samples[video_id] = database_entry("testing", None, (1, n_frames + 1), stem)
            continue
        duration = float(video.get("duration") or 0)
        if duration <= 0:
            raise UserError(f"video {video_id} has no positive 'duration' in the annotation "
                            "file, so its frame rate is unknown")
        fps = n_frames / duration
        for k, annotation in enumerate(video.get("annotations", [])):
            first, end = segment_frames(*annotation["segment"], fps, n_frames)
            if first >= end:
                outside.append(f"{video_id}_{k}")
                continue
            samples[f"{video_id}_{k}"] = database_entry(video["subset"], annotation["label"],
                                                        (first, end), stem)
    return {"labels": labels, "database": samples}, missing, outside


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--annotation_path", type=Path, required=True,
                        help="official activity_net.v1-3.min.json")
    parser.add_argument("--video_path", type=Path, required=True,
                        help="HDF5 root: <video_path>/v_<id>.hdf5")
    parser.add_argument("--dst_path", type=Path, required=True,
                        help="folder for activitynet.json, or a .json file path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit code."""
    args = _parse_args(argv)

    def build() -> None:
        require_dir(args.video_path, "--video_path",
                    "run util_scripts/generate_video_hdf5.py first, see dataset/README.md")
        database = load_activitynet(args.annotation_path)
        data, missing, outside = build_activitynet(database, args.video_path)
        report_missing(missing, len(database), args.video_path)
        if outside:
            print(f"warning: {len(outside)} segments are empty or lie outside their video and "
                  f"are left out: {', '.join(outside[:5])}", file=sys.stderr)
        if len(missing) == len(database):
            raise UserError(f"no video has an HDF5 file under --video_path {args.video_path} "
                            "(it must hold v_<id>.hdf5)")
        save_annotation(args.dst_path, "activitynet.json", data, "samples")

    return run_cli(build)


if __name__ == "__main__":
    sys.exit(main())
