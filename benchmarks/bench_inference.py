"""Video-level inference: time and peak memory, ours against the original's loop.

    python benchmarks/bench_inference.py --make_synthetic 8 --frames 150 --device cpu
    python benchmarks/bench_inference.py --make_synthetic 1 --frames 2400 --cases ours:0
    python benchmarks/bench_inference.py --video_path V --annotation_path A --subset validation \\
        --device cuda --cases ours:0 ours:256

Cases, each run in its own process (clean peak memory), each printing one JSON line:
- `ours:B`: `evaluation.pipeline.predict_subset` as `--inference` runs it (an untrained
  R(2+1)D-18 student, which computes as a trained one does), B windows per batch; B = 0 is
  the default for the device (`inference_batch_size`).
- `original`: the original release's loop: every window of one video in one batch.
Keys: case, batch_size (the batch used; "video" for the original), device, n_videos,
n_windows, seconds (the inference alone), clips_per_s, peak_rss_gb (the process's peak
resident set), rss_growth_gb (peak minus the resident set once the student is built),
worker_peak_rss_gb (the largest loader worker's peak, pages shared with the process
included), on CUDA cuda_peak_gb (torch.cuda.max_memory_allocated), and the settings.
`--make_synthetic N --frames F` writes N videos of F frames (320×240 JPEGs, every one in the
inferred subset) to a temporary folder; a long video (F in the thousands, as ActivityNet's
minutes) shows whether memory grows with video length.
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets import collate  # noqa: E402
from datasets.loader import batches  # noqa: E402
from datasets.synthetic import write_synthetic_dataset  # noqa: E402
from datasets.config import DataConfig, make_dataset  # noqa: E402
from evaluation.pipeline import inference_batch_size, predict_subset  # noqa: E402
from models import build_student  # noqa: E402
from opts import parse_opts, resolve  # noqa: E402
from training.batch import model_input  # noqa: E402
from training.precision import SpeedMode, configure_backends, speed_mode  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--video_path", type=Path)
    p.add_argument("--annotation_path", type=Path)
    p.add_argument("--subset", default="validation")
    p.add_argument("--make_synthetic", type=int, metavar="N")
    p.add_argument("--frames", type=int, default=150, help="frames per synthetic video")
    p.add_argument("--cases", nargs="+", default=["original", "ours:0", "ours:64"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch_size", type=int, default=16, help="--batch_size (the default's base)")
    p.add_argument("--n_threads", type=int, default=2, help="loader workers")
    p.add_argument("--sample_size", type=int, default=112)
    p.add_argument("--sample_duration", type=int, default=16)
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.make_synthetic is None and (args.video_path is None or args.annotation_path is None):
        p.error("give --video_path and --annotation_path, or --make_synthetic N")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is visible to PyTorch (use --device cpu)")
    return args


def synthetic_data(root: Path, n_videos: int, n_frames: int) -> tuple[Path, Path]:
    """(video path, annotation path) of n_videos synthetic videos, all in "validation"."""
    data = write_synthetic_dataset(root, n_videos, n_frames)
    annotation = json.loads(data.annotation_path.read_text())
    for entry in annotation["database"].values():
        entry["subset"] = "validation"
    data.annotation_path.write_text(json.dumps(annotation))
    return data.video_path, data.annotation_path


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e9


def run_case(args: argparse.Namespace, result_path: Path) -> dict:
    n_classes = len(json.loads(args.annotation_path.read_text())["labels"])
    config = resolve(parse_opts([
        "--video_path", str(args.video_path), "--annotation_path", str(args.annotation_path),
        "--result_path", str(result_path), "--n_classes", str(n_classes), "--batch_size", str(args.batch_size),
        "--n_threads", str(args.n_threads), "--sample_size", str(args.sample_size),
        "--sample_duration", str(args.sample_duration), "--inference",
        "--inference_batch_size", args.case.partition(":")[2] or "0",
        *(["--no_cuda"] if args.device == "cpu" else [])]))
    device = torch.device(args.device)
    configure_backends(device)
    mode = speed_mode(device, exact=False)
    student = build_student(config.model.name, config.model.depth, n_classes).to(device)
    if mode.channels_last:
        student = student.to(memory_format=torch.channels_last_3d)
    before = rss_gb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if args.case == "original":
        n_videos, n_windows = original_inference(config.data, student, args.subset, mode, device)
        batch: int | str = "video"
    else:
        dataset, _ = predict_subset(config.eval, config.data, student, args.subset, device, mode)
        n_videos, n_windows = dataset.n_videos, len(dataset)
        batch = inference_batch_size(config.eval, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    gc.collect()   # the loader goes, and its workers with it: their peaks are then known
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    worker_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    record = {"case": args.case, "batch_size": batch, "device": args.device,
              "n_videos": n_videos, "n_windows": n_windows, "seconds": round(seconds, 2),
              "clips_per_s": round(n_windows / seconds, 2), "peak_rss_gb": round(peak, 3),
              "rss_growth_gb": round(peak - before, 3),
              "worker_peak_rss_gb": round(worker_peak, 3), "n_threads": args.n_threads,
              "torch_threads": torch.get_num_threads(), "sample_size": args.sample_size,
              "sample_duration": args.sample_duration}
    if device.type == "cuda":
        record["cuda_peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
    return record


def original_inference(data: DataConfig, student, subset: str, mode: SpeedMode, device) -> tuple[int, int]:
    """The original's inference loop: one video's windows per batch (its multi-clip
    dataset), softmax scores averaged per video. Returns (videos, windows)."""
    dataset = make_dataset(data, subset, "inference")
    per_video = [[] for _ in range(dataset.n_videos)]
    for item, video in enumerate(dataset.item_video_index.tolist()):
        per_video[video].append(item)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=per_video, collate_fn=collate,
                                         num_workers=data.n_threads)
    student.eval()
    with torch.inference_mode():
        for batch in batches(loader, "original inference"):
            clip = model_input(batch["clip"].to(device), data.mean, data.std, mode.channels_last)
            with torch.autocast(device.type, dtype=mode.autocast_dtype,
                                enabled=mode.autocast_dtype is not None):
                logits, _ = student(clip)
            logits.float().softmax(dim=1).mean(dim=0).cpu()
    return dataset.n_videos, len(dataset)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.case is not None:
            print(json.dumps(run_case(args, Path(tmp))), flush=True)
            return 0
        if args.make_synthetic is not None:
            args.video_path, args.annotation_path = synthetic_data(
                Path(tmp) / "data", args.make_synthetic, args.frames)
            args.subset = "validation"
        common = ["--video_path", str(args.video_path), "--annotation_path",
                  str(args.annotation_path), "--subset", args.subset, "--device", args.device,
                  "--batch_size", str(args.batch_size), "--n_threads", str(args.n_threads),
                  "--sample_size", str(args.sample_size),
                  "--sample_duration", str(args.sample_duration)]
        for case in args.cases:
            out = subprocess.run([sys.executable, __file__, *common, "--case", case],
                                 check=True, capture_output=True, text=True).stdout
            print(out.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
