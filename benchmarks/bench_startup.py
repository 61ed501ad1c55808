"""Start-up of a training dataset at scale: ours (first build of the audio feature cache,
then cached) against the original release's dataset construction, side by side.

    python benchmarks/bench_startup.py --videos 100000 --root /tmp/startup
    python benchmarks/bench_startup.py --videos 100000 --rows 10 --root /tmp/startup

writes (once, under --root) N videos in 300 classes: an annotation JSON, an empty HDF5 file
per video (start-up only looks them up) and a float32 audio feature of shape (D,), or
(T, D) with --rows T, dated an hour back as files of a dataset on disk are. Then each case
runs in its own process and prints one JSON line: impl, videos, rows, dim, seconds (building
the dataset object), peak_rss_gb (the process's peak resident set), rss_growth_gb (peak
minus the resident set before the build), and for ours the audio feature dimension found.

- `original`: the original release's AudioVideoDataset construction (annotation, class
  filter, per-video paths, audio file test, video file test, sample dicts); it reads no
  audio feature until an item is loaded.
- `ours_first`: `VideoDataset` with --audio_path after deleting the cache: every feature
  file is read, checked and written to `<audio_path>/.ccl_cache`.
- `ours_cached`: the same again, served from that cache.
`--code DIR` times `VideoDataset` of another checkout instead of this one (as `ours_first`
and `ours_cached`, whatever it does with the cache), to compare versions.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CASES = ("original", "ours_first", "ours_cached")
N_CLASSES = 300
N_FRAMES = 150


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--videos", type=int, default=10_000)
    p.add_argument("--rows", type=int, default=0, help="T of (T, D) features; 0: (D,) features")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--root", type=Path, required=True, help="folder for the synthetic data sets")
    p.add_argument("--case", choices=CASES, default=None,
                   help="run one case in this process (default: each in its own)")
    p.add_argument("--code", type=Path, default=REPO,
                   help="repository whose VideoDataset is timed")
    return p.parse_args(argv)


def data_folder(args: argparse.Namespace) -> Path:
    return args.root / f"videos{args.videos}_rows{args.rows}_dim{args.dim}"


def write_data(folder: Path, n_videos: int, rows: int, dim: int) -> None:
    """The synthetic data set of the module docstring, unless `folder` already holds it."""
    if (folder / "annotation.json").is_file():
        return
    rng = np.random.default_rng(0)
    labels = [f"class{c:03d}" for c in range(N_CLASSES)]
    for sub in ("hdf5", "audio"):
        for label in labels:
            (folder / sub / label).mkdir(parents=True, exist_ok=True)
    shape = (dim,) if rows == 0 else (rows, dim)
    past = time.time() - 3600
    database = {}
    for v in range(n_videos):
        label, video_id = labels[v % N_CLASSES], f"v{v:07d}"
        (folder / "hdf5" / label / f"{video_id}.hdf5").touch()
        feature = folder / "audio" / label / f"{video_id}.npy"
        np.save(feature, rng.standard_normal(shape, dtype=np.float32))
        os.utime(feature, (past, past))
        database[video_id] = {"subset": "training",
                              "annotations": {"label": label, "segment": [1, N_FRAMES + 1]}}
    (folder / "annotation.json").write_text(json.dumps({"labels": labels, "database": database}))


def original_dataset(root_path: Path, audio_path: Path, annotation_path: Path, subset: str):
    """The original release's AudioVideoDataset.__make_av_dataset with its HDF5 path
    formatter (`root/label/id.hdf5`) and the audio formatter `audio/label/id.npy`."""
    with annotation_path.open("r") as f:
        data = json.load(f)
    av_classes = [x.name for x in sorted(audio_path.iterdir())]
    video_ids, video_paths, audio_paths, annotations = [], [], [], []
    for key, value in data["database"].items():
        if value["annotations"]["label"] in av_classes and value["subset"] == subset:
            video_ids.append(key)
            annotations.append(value["annotations"])
            label = value["annotations"]["label"]
            video_paths.append(root_path / label / f"{key}.hdf5")
            audio_file = audio_path / label / f"{key}.npy"
            audio_paths.append(audio_file if os.path.isfile(audio_file) else None)
    class_to_idx = {label: i for i, label in enumerate(data["labels"])}
    dataset = []
    for i in range(len(video_ids)):
        label_id = class_to_idx[annotations[i]["label"]] if "label" in annotations[i] else -1
        if not video_paths[i].exists():
            continue
        segment = annotations[i]["segment"]
        if segment[1] == 1:
            continue
        dataset.append({"video": video_paths[i], "audio": str(audio_paths[i]),
                        "segment": segment, "frame_indices": list(range(segment[0], segment[1])),
                        "video_id": video_ids[i], "label": label_id})
    return dataset


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e9


def run_case(args: argparse.Namespace) -> dict:
    folder = data_folder(args)
    annotation = folder / "annotation.json"
    video_path, audio_path = folder / "hdf5", folder / "audio"
    if args.case == "ours_first":
        shutil.rmtree(audio_path / ".ccl_cache", ignore_errors=True)
    sys.path.insert(0, str(args.code))
    from datasets import VideoDataset   # after the path: --code picks the checkout
    before = rss_gb()
    start = time.perf_counter()
    if args.case == "original":
        dataset = original_dataset(video_path, audio_path, annotation, "training")
        extra = {}
    else:
        dataset = VideoDataset(video_path, annotation, "training", audio_path=audio_path)
        extra = {"audio_dim": int(dataset.audio.rows.shape[1])}
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    assert len(dataset) == args.videos
    return {"impl": args.case, "videos": args.videos, "rows": args.rows, "dim": args.dim,
            "seconds": round(seconds, 3), "peak_rss_gb": round(peak, 3),
            "rss_growth_gb": round(peak - before, 3), "code": str(args.code), **extra}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.case is not None:
        print(json.dumps(run_case(args)), flush=True)
        return 0
    write_data(data_folder(args), args.videos, args.rows, args.dim)
    argv = list(sys.argv[1:] if argv is None else argv)
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, *argv, "--case", case], check=True,
                             capture_output=True, text=True).stdout
        print(out.strip(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
