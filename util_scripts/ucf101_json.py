"""Build the UCF101 (or, with audio features, UCF51) split JSON files of SPEC §1.

    python util_scripts/ucf101_json.py --dir_path dataset/UCF101/ucfTrainTestlist \\
        --video_path dataset/UCF101/hdf5data \\
        --audio_path dataset/UCF101/audiocnn14embed512_features \\
        --dst_path dataset/UCF101 --video_type hdf5 --split 1

Writes `<dst_path>/ucf51_0N.json` (with --audio_path: only the classes that have a folder
of audio features, labels sorted) or `<dst_path>/ucf101_0N.json` (the 101 classes of
classInd.txt, in its order). Train lists give the "training" subset, test lists the
"validation" subset. Listed videos without an HDF5 file are reported and left out.
"""
import argparse
import sys
from pathlib import Path, PurePosixPath

if __package__ in (None, ""):  # run as `python util_scripts/<name>.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from errors import ArgumentParser, UserError
from util_scripts.annotation import (database_entry, frame_count, report_missing, require_dir,
                                     run_cli, write_database)

SUBSETS = (("trainlist", "training"), ("testlist", "validation"))


def read_class_index(path: Path) -> list[str]:
    """Class names of `classInd.txt` (lines `index name`, CRLF or LF) in file order."""
    if not path.is_file():
        raise UserError(f"{path} not found (--dir_path must be the ucfTrainTestlist folder)")
    names = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise UserError(f"{path}:{number}: expected `index ClassName`, got {line!r}")
        names.append(fields[1])
    return names


def read_split_list(path: Path) -> list[tuple[str, str]]:
    """(class, video_id) for each line `Class/v_X.avi [index]` of a train/test list."""
    videos = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        parts = PurePosixPath(fields[0]).parts
        if len(parts) != 2 or len(fields) > 2:
            raise UserError(f"{path}:{number}: expected `Class/video.avi [index]`, got {line!r}")
        videos.append((parts[0], PurePosixPath(parts[1]).stem))
    return videos


def audio_classes(audio_path: Path) -> list[str]:
    """Sorted (case-sensitive) names of the class folders under `audio_path`."""
    return sorted(p.name for p in audio_path.iterdir()
                  if p.is_dir() and not p.name.startswith("."))


def build_ucf_split(dir_path: Path, split: int, video_path: Path,
                    audio_path: Path | None = None) -> tuple[dict, list[str]]:
    """The annotation JSON of one official split and the ids of listed videos not on disk.

    dir_path: the ucfTrainTestlist folder (classInd.txt, trainlist0N.txt, testlist0N.txt).
    video_path: HDF5 root, `<video_path>/<Class>/<video_id>.hdf5`.
    audio_path: root of the audio features; when given, the labels are its sorted class
        folder names and videos of other classes are dropped.
    Returns ({"labels": [...], "database": {video_id: entry}}, missing video ids).
    Each entry's segment is [1, n_frames + 1] with n_frames read from the HDF5 file.
    """
    labels = read_class_index(dir_path / "classInd.txt")
    if audio_path is not None:
        known = set(labels)
        labels = audio_classes(audio_path)
        strangers = [name for name in labels if name not in known]
        if strangers:
            raise UserError(f"--audio_path {audio_path} has folders that are not UCF101 "
                            f"classes ({', '.join(strangers[:3])}); it must be the folder "
                            "that holds <Class>/<video_id>.npy")
    kept = set(labels)
    database, missing = {}, []
    for prefix, subset in SUBSETS:
        list_path = dir_path / f"{prefix}{split:02d}.txt"
        if not list_path.is_file():
            raise UserError(f"{list_path} not found (split {split} is not in --dir_path)")
        for label, video_id in read_split_list(list_path):
            if label not in kept:
                continue
            hdf5 = video_path / label / f"{video_id}.hdf5"
            if not hdf5.is_file():
                missing.append(video_id)
                continue
            database[video_id] = database_entry(subset, label, (1, frame_count(hdf5) + 1))
    return {"labels": labels, "database": database}, missing


def available_splits(dir_path: Path) -> list[int]:
    """Split numbers N in 1..3 whose trainlist0N.txt and testlist0N.txt both exist."""
    return [n for n in (1, 2, 3)
            if all((dir_path / f"{prefix}{n:02d}.txt").is_file() for prefix, _ in SUBSETS)]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir_path", type=Path, required=True,
                        help="ucfTrainTestlist folder (classInd.txt, train/test lists)")
    parser.add_argument("--video_path", type=Path, required=True,
                        help="HDF5 root: <video_path>/<Class>/<video_id>.hdf5")
    parser.add_argument("--audio_path", type=Path, default=None,
                        help="audio feature root <Class>/<video_id>.npy (gives UCF51)")
    parser.add_argument("--dst_path", type=Path, required=True, help="folder for the JSON")
    parser.add_argument("--video_type", default="hdf5", choices=["hdf5"],
                        help="only HDF5 videos are supported")
    parser.add_argument("--split", type=int, choices=[1, 2, 3], default=None,
                        help="official split (default: every split found in --dir_path)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit code."""
    args = _parse_args(argv)

    def build() -> None:
        require_dir(args.dir_path, "--dir_path", "the official ucfTrainTestlist folder")
        require_dir(args.video_path, "--video_path",
                    "run util_scripts/generate_video_hdf5.py first, see dataset/README.md")
        if args.audio_path is not None:
            require_dir(args.audio_path, "--audio_path", "extract the audio feature archive, "
                        "see dataset/README.md")
        splits = [args.split] if args.split is not None else available_splits(args.dir_path)
        if not splits:
            raise UserError(f"no trainlist0N.txt/testlist0N.txt pair in {args.dir_path}")
        name = "ucf51" if args.audio_path is not None else "ucf101"
        for split in splits:
            data, missing = build_ucf_split(args.dir_path, split, args.video_path,
                                            args.audio_path)
            report_missing(missing, len(data["database"]) + len(missing), args.video_path)
            if not data["database"]:
                raise UserError(f"no listed video has an HDF5 file under --video_path "
                                f"{args.video_path} (it must hold <Class>/<video_id>.hdf5)")
            destination = args.dst_path / f"{name}_{split:02d}.json"
            write_database(destination, data["labels"], data["database"])
            print(f"{destination}: {len(data['labels'])} classes, {len(data['database'])} "
                  "videos", file=sys.stderr)

    return run_cli(build)


if __name__ == "__main__":
    sys.exit(main())
