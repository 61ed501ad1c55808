"""End-to-end training throughput: loader and step together, as `main.py` trains.

    python benchmarks/bench_end_to_end.py --make_synthetic 800 --config ai --batch_size 64 \
        --n_threads 16 --device cuda --compile --epochs 2 [--gpu_decode]

trains `--epochs` epochs with `main.py` (no validation) and prints one JSON line with the
last epoch's `train.log` figures: `clips_per_s` (clips over the epoch's wall time) and
`data_wait` (the share of it spent waiting for the loader), plus the settings. The last
epoch is the steady state: the first includes worker start-up and, with --compile, the
compilation. `--gpu_decode` passes main.py's --gpu_decode (the workers read the JPEG
bytes, the training process decodes each batch on the device). With real data, give --video_path, --annotation_path and --audio_path.
Without --image_teacher_weights the image teacher is an untrained ResNet-34
(`--allow_untrained_teacher`; its speed does not depend on its weights), and the line says so.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import main as entry  # noqa: E402
from datasets import load_annotation  # noqa: E402
from datasets.synthetic import write_synthetic_dataset  # noqa: E402

CONFIG_FLAGS = {"base": [], "a": ["--use_audio"], "i": ["--use_image"],
                "ai": ["--use_audio", "--use_image"]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video_path", type=Path)
    p.add_argument("--annotation_path", type=Path)
    p.add_argument("--audio_path", type=Path)
    p.add_argument("--make_synthetic", type=int, metavar="N",
                   help="write N synthetic videos (320x240 JPEG frames) to a temp dir and use them")
    p.add_argument("--synthetic_frames", type=int, default=32)
    p.add_argument("--config", default="ai", choices=sorted(CONFIG_FLAGS))
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--n_threads", type=int, default=16)
    p.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--exact", action="store_true")
    p.add_argument("--gpu_decode", action="store_true")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--sample_size", type=int, default=112)
    p.add_argument("--sample_duration", type=int, default=16)
    p.add_argument("--image_teacher_weights", type=Path)
    args = p.parse_args(argv)
    if args.make_synthetic is None and (args.video_path is None or args.annotation_path is None):
        p.error("give --video_path and --annotation_path, or --make_synthetic N")
    if args.config in ("a", "ai") and args.make_synthetic is None and args.audio_path is None:
        p.error(f"--config {args.config} needs --audio_path")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is visible to PyTorch (use --device cpu)")
    if min(args.batch_size, args.epochs) < 1 or args.n_threads < 0:
        p.error("--batch_size and --epochs must be positive and --n_threads >= 0")
    return args


def main_options(args: argparse.Namespace, result_path: Path) -> list[str]:
    """The main.py command line for this benchmark run."""
    n_classes = len(load_annotation(args.annotation_path).labels)
    options = ["--video_path", str(args.video_path), "--annotation_path", str(args.annotation_path),
               "--result_path", str(result_path), "--n_classes", str(n_classes),
               "--batch_size", str(args.batch_size), "--n_threads", str(args.n_threads),
               "--n_epochs", str(args.epochs), "--sample_size", str(args.sample_size),
               "--sample_duration", str(args.sample_duration), "--no_val", "--no-tensorboard",
               *CONFIG_FLAGS[args.config]]
    if args.audio_path is not None:
        options += ["--audio_path", str(args.audio_path)]
    if "--use_image" in options:
        options += (["--image_teacher_weights", str(args.image_teacher_weights)]
                    if args.image_teacher_weights else ["--allow_untrained_teacher"])
    options += ["--no_cuda"] if args.device == "cpu" else []
    options += ["--compile"] if args.compile else []
    options += ["--exact"] if args.exact else []
    options += ["--gpu_decode"] if args.gpu_decode else []
    return options


def run(args: argparse.Namespace, workdir: Path) -> dict:
    if args.make_synthetic is not None:
        data = write_synthetic_dataset(workdir / "data", args.make_synthetic, args.synthetic_frames)
        args.video_path, args.annotation_path = data.video_path, data.annotation_path
        args.audio_path = args.audio_path or data.audio_path
    result_path = workdir / "run"
    code = entry.main(main_options(args, result_path))
    if code != 0:
        raise SystemExit(code)
    with open(result_path / "train.log", newline="") as f:
        last = list(csv.DictReader(f, delimiter="\t"))[-1]
    device = (torch.cuda.get_device_name() if args.device == "cuda"
              else f"cpu ({torch.get_num_threads()} threads)")
    return {"clips_per_s": float(last["clips_per_s"]), "data_wait": float(last["data_wait"]),
            "epoch": int(last["epoch"]), "config": args.config, "batch_size": args.batch_size,
            "n_threads": args.n_threads, "device": args.device, "device_name": device,
            "mode": "compile" if args.compile else "exact" if args.exact else "default",
            "gpu_decode": args.gpu_decode,
            "image_teacher": ("none" if args.config in ("base", "a") else
                              "weights" if args.image_teacher_weights else "untrained"),
            "sample_size": args.sample_size, "sample_duration": args.sample_duration,
            "torch": torch.__version__}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, Path(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
