"""Throughput of the video loader, optionally against the original release's loading chain.

    python benchmarks/bench_loader.py --make_synthetic 24 --batch_size 16 --n_threads 0 \
        --n_batches 10 --reference

prints one JSON line: {"clips_per_s", "ms_per_batch", "n_threads", "batch_size", ...} and,
with --reference, "reference_clips_per_s" and "speedup" measured in the same run. Ours
yields uint8 clips (normalization runs on the device); the reference yields normalized
float clips as the original did: PIL decode per frame, convert RGB, per-frame
RandomResizedCrop + flip with PIL, ToTensor, Normalize, stack.

Both loaders are timed in steady state: each round starts fresh workers, lets them fill
their prefetch queues (untimed), times `n_batches` batches of one long epoch (the items are
cycled, so no epoch ends and no worker restarts inside the timed stretch, however few
videos there are), then shuts the workers down so none works in the background while the
other loader is timed.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode, RandomResizedCrop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets import KINETICS_MEAN, KINETICS_STD, VideoDataset, build_loader  # noqa: E402
from datasets.progress import progress  # noqa: E402
from datasets.synthetic import write_synthetic_dataset  # noqa: E402


class Cycled(Dataset):
    """`length` items that go round `dataset` (item i is dataset[i % len(dataset)]; a
    seeded training key (i, seed) is (i % len(dataset), seed))."""

    def __init__(self, dataset: Dataset, length: int) -> None:
        self.dataset, self.length = dataset, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: int | tuple[int, int]) -> object:
        if isinstance(key, tuple):
            return self.dataset[(key[0] % len(self.dataset), key[1])]
        return self.dataset[key % len(self.dataset)]


class ReferenceDataset(Dataset):
    """The original CCL / 3D-ResNets training chain over the same samples and temporal crops."""

    def __init__(self, ours: VideoDataset, size: int, scale: tuple[float, float],
                 ratio: tuple[float, float]) -> None:
        self.ours, self.size, self.scale, self.ratio = ours, size, scale, ratio

    def __len__(self) -> int:
        return len(self.ours)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        video = int(self.ours.item_video_index[index])
        with h5py.File(self.ours.hdf5_files[video], "r") as f:
            data = f["video"]
            frames = [Image.open(io.BytesIO(data[k - 1])) for k in self.ours.frame_numbers(index)]
        frames = [img.convert("RGB") for img in frames]
        top, left, h, w = RandomResizedCrop.get_params(frames[0], list(self.scale),
                                                       list(self.ratio))
        flip = random.random() < 0.5
        clip = []
        for img in frames:
            img = TF.resized_crop(img, top, left, h, w, [self.size, self.size],
                                  InterpolationMode.BILINEAR)
            if flip:
                img = TF.hflip(img)
            clip.append(TF.normalize(TF.to_tensor(img), KINETICS_MEAN, KINETICS_STD))
        return torch.stack(clip, 0).permute(1, 0, 2, 3), self.ours.video_labels[video]


def warmup_batches(n_threads: int) -> int:
    """Batches taken before the timer starts: the first (worker start-up) and the ones the
    workers prefetch (DataLoader's default prefetch_factor 2 per worker)."""
    return 1 + 2 * n_threads


def time_batches(make_loader: Callable[[], DataLoader], n_batches: int, desc: str) -> float:
    """Seconds for `n_batches` batches of a fresh loader's first epoch after its warm-up
    batches; its workers are shut down before returning."""
    loader = make_loader()
    batches = iter(loader)
    for _ in range(warmup_batches(loader.num_workers)):
        next(batches)
    start = time.perf_counter()
    for _ in progress(range(n_batches), desc):
        next(batches)
    elapsed = time.perf_counter() - start
    del batches, loader  # stops the workers, persistent ones included
    return elapsed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video_path", type=Path)
    p.add_argument("--annotation_path", type=Path)
    p.add_argument("--audio_path", type=Path)
    p.add_argument("--subset", default="training", choices=["training", "validation", "testing"])
    p.add_argument("--mode", default="train", choices=["train", "val", "inference"])
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--n_threads", type=int, default=0)
    p.add_argument("--n_batches", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2,
                   help="interleaved timing rounds per loader; the fastest is reported")
    p.add_argument("--sample_size", type=int, default=112)
    p.add_argument("--sample_duration", type=int, default=16)
    p.add_argument("--make_synthetic", type=int, metavar="N",
                   help="write N synthetic videos (320x240 JPEG frames) to a temp dir and use them")
    p.add_argument("--synthetic_frames", type=int, default=120)
    p.add_argument("--reference", action="store_true",
                   help="also time the original release's PIL chain (train mode only)")
    args = p.parse_args(argv)
    if args.make_synthetic is None and (args.video_path is None or args.annotation_path is None):
        p.error("give --video_path and --annotation_path, or --make_synthetic N")
    if args.reference and args.mode != "train":
        p.error("--reference times the training chain: use it with --mode train")
    if min(args.batch_size, args.n_batches, args.rounds) < 1 or args.n_threads < 0:
        p.error("--batch_size, --n_batches, --rounds must be positive and --n_threads >= 0")
    return args


def run(args: argparse.Namespace) -> dict:
    scale, ratio = (0.25, 1.0), (3 / 4, 4 / 3)
    dataset = VideoDataset(args.video_path, args.annotation_path, args.subset, args.mode,
                           args.sample_duration, args.sample_size, audio_path=args.audio_path,
                           crop_scale=scale, crop_ratio=ratio)
    length = (warmup_batches(args.n_threads) + args.n_batches) * args.batch_size
    loaders = {"ours": lambda: build_loader(Cycled(dataset, length), args.batch_size,
                                            shuffle=True, n_threads=args.n_threads)}
    if args.reference:
        reference = Cycled(ReferenceDataset(dataset, args.sample_size, scale, ratio), length)
        loaders["reference"] = lambda: DataLoader(reference, args.batch_size, shuffle=True,
                                                  num_workers=args.n_threads)
    best = {name: float("inf") for name in loaders}
    for _ in range(args.rounds):
        for name, loader in loaders.items():
            best[name] = min(best[name], time_batches(loader, args.n_batches, name))
    clips = args.n_batches * args.batch_size
    result = {"clips_per_s": round(clips / best["ours"], 1),
              "ms_per_batch": round(1e3 * best["ours"] / args.n_batches, 2),
              "n_threads": args.n_threads, "batch_size": args.batch_size,
              "n_batches": args.n_batches, "mode": args.mode, "subset": args.subset,
              "n_items": len(dataset), "torch_threads": torch.get_num_threads()}
    if args.reference:
        result["reference_clips_per_s"] = round(clips / best["reference"], 1)
        result["reference_ms_per_batch"] = round(1e3 * best["reference"] / args.n_batches, 2)
        result["speedup"] = round(best["reference"] / best["ours"], 2)
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.n_threads == 0:
        # Loader workers run with one torch thread; the in-process case does the same so the
        # numbers mean "one core", and intra-op threads do not fight over a busy machine.
        torch.set_num_threads(1)
    torch.manual_seed(0)
    random.seed(0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.make_synthetic is not None:
                data = write_synthetic_dataset(tmp, args.make_synthetic, args.synthetic_frames)
                args.video_path, args.annotation_path = data.video_path, data.annotation_path
                args.audio_path = args.audio_path or data.audio_path
            result = run(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
