"""JPEG decoding throughput: one CPU core against the training device (--gpu_decode).

    python benchmarks/bench_decode.py [--device cpu|cuda] [--batch_size 64] [--cpu_batch_size 16]
        [--repeats 3] [--cpu_threads 1]

prints one JSON line per cell, on synthetic 320×240 frames of realistic size (about 13 KB,
`datasets.synthetic.realistic_jpeg`), a batch of `batch_size` clips of `sample_duration`
distinct frames (`cpu_batch_size` clips in the CPU cells: the rates are per frame and per
clip, and one core is slow):

- stage `jpeg`: `torchvision.io.decode_jpeg` of the batch's frames in one call (libjpeg-turbo
  on the CPU, nvJPEG batched on CUDA);
- stage `clips` (on `--device`): `datasets.device_decode.decode_clips`, what the training
  process does per batch under --gpu_decode: decode, then crop, resize (bilinear,
  antialiased, float32), flip and assemble the (B, 3, T, S, S) clip, with training crop
  plans (RandomResizedCrop + flip);
- stage `worker` (CPU): what a loader worker does per clip without --gpu_decode (decode the
  crop box, uint8 resize, flip), clip by clip.

CPU cells run on `--cpu_threads` intra-op threads (1: one core); with `--device cuda` the
CPU `jpeg` and `worker` cells run too, as the baseline measured in the same run. Each cell
times `repeats` batches after one untimed warm-up batch (nvJPEG's set-up, first kernel
launches); the device is synchronized before each timer read.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision.io import ImageReadMode, decode_jpeg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.device_decode import decode_clips  # noqa: E402
from datasets.encoded import EncodedBatch, EncodedItem  # noqa: E402
from datasets.hdf5_clip import EncodedClip, decode_frames  # noqa: E402
from datasets.spatial import ClipRandomResizedCrop  # noqa: E402
from datasets.synthetic import realistic_jpeg  # noqa: E402

HEIGHT, WIDTH = 240, 320


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   choices=["cpu", "cuda"])
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--cpu_batch_size", type=int, default=16)
    p.add_argument("--sample_duration", type=int, default=16)
    p.add_argument("--sample_size", type=int, default=112)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cpu_threads", type=int, default=1)
    p.add_argument("--pool", type=int, default=64, help="distinct synthetic frames, reused over the batch")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is visible to PyTorch (use --device cpu)")
    numbers = (args.batch_size, args.cpu_batch_size, args.sample_duration, args.sample_size,
               args.repeats, args.cpu_threads, args.pool)
    if min(numbers) < 1:
        p.error("every number must be at least 1")
    return args


def synthetic_items(args: argparse.Namespace, n_clips: int) -> list[EncodedItem]:
    """n_clips clips of sample_duration distinct frames each, with training crop plans."""
    rng = np.random.default_rng(0)
    pool = [np.frombuffer(realistic_jpeg(rng, phase=k / 4), dtype=np.uint8).copy()
            for k in range(args.pool)]
    transform = ClipRandomResizedCrop(args.sample_size)
    generator = torch.Generator().manual_seed(0)
    items = []
    for b in range(n_clips):
        data = [pool[(b * 7 + t) % len(pool)] for t in range(args.sample_duration)]
        clip = EncodedClip(Path(f"synthetic_{b}"), np.arange(1, args.sample_duration + 1), data,
                           torch.arange(args.sample_duration), (HEIGHT, WIDTH))
        items.append(EncodedItem(clip, transform.plan(HEIGHT, WIDTH, generator), args.sample_size))
    return items


def worker_batch(items: list[EncodedItem]) -> list[torch.Tensor]:
    """The loader worker's path without --gpu_decode, clip by clip (`VideoDataset._load`)."""
    transform = ClipRandomResizedCrop(items[0].size)
    return [transform.finish(decode_frames(item.clip, item.plan.box), item.plan) for item in items]


def timed(run, device: torch.device, repeats: int) -> float:
    """Seconds per call of `run`, the mean of `repeats` calls after one warm-up call."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    run()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    sync()
    return (time.perf_counter() - start) / repeats


def cell(stage: str, device: torch.device, seconds: float, args: argparse.Namespace,
         batch: EncodedBatch) -> dict:
    frames, clips = len(batch.offsets) - 1, len(batch)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"cpu ({torch.get_num_threads()} threads)")
    return {"bench": "decode", "stage": stage, "device": device.type, "device_name": name,
            "batch_size": clips, "sample_duration": args.sample_duration,
            "sample_size": args.sample_size, "frames_per_batch": frames,
            "mean_jpeg_kb": round(len(batch.data) / frames / 1000, 2),
            "frame_size": f"{WIDTH}x{HEIGHT}", "repeats": args.repeats,
            "ms_per_batch": round(1000 * seconds, 2), "frames_per_s": round(frames / seconds, 1),
            "clips_per_s": round(clips / seconds, 1),
            "torch": torch.__version__, "torchvision": torchvision.__version__}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cpu, device = torch.device("cpu"), torch.device(args.device)
    runs = []
    for where in dict.fromkeys([cpu, device]):
        items = synthetic_items(args, args.cpu_batch_size if where == cpu else args.batch_size)
        batch = EncodedBatch.collate(items)
        jpegs = batch.frames()
        runs += [("jpeg", where, batch,
                  lambda d=where, j=jpegs: decode_jpeg(j, mode=ImageReadMode.RGB, device=d))]
        if where == device:
            runs += [("clips", where, batch, lambda d=where, b=batch: decode_clips(b, d))]
        if where == cpu:
            runs += [("worker", where, batch, lambda i=items: worker_batch(i))]
    threads = torch.get_num_threads()
    for stage, where, batch, run in runs:
        torch.set_num_threads(args.cpu_threads if where == cpu else threads)
        print(json.dumps(cell(stage, where, timed(run, where, args.repeats), args, batch)), flush=True)


if __name__ == "__main__":
    main()
