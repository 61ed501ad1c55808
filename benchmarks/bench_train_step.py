"""Speed of one training step, ours against the original release's, on synthetic batches.

    python benchmarks/bench_train_step.py --config ai --batch_size 16 --device cuda --steps 50
    python benchmarks/bench_train_step.py --all --batch_size 64 --device cuda --compile

One cell prints one JSON line: {"impl", "config", "batch_size", "device", "mode",
"ms_per_step", "clips_per_s", "peak_mem_gb", "peak_mem_kind", "torch", "device_name", ...}.
`--all` runs every cell of {base, a, i, ai} × {ours default, ours exact, (ours compile,)
original} in its own process (clean peak memory, no shared caches) and ends with a line
of ours/original clips_per_s ratios. See benchmarks/README.md.

Batches live in device memory as uint8 clips and are normalized on the device inside the
timed step, as in training; data loading is not measured (benchmarks/bench_loader.py is).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.original_step import TrackedImageTeacher, original_step  # noqa: E402
from datasets.progress import Progress, progress  # noqa: E402
from datasets.transforms import KINETICS_MEAN, KINETICS_STD  # noqa: E402
from errors import UserError  # noqa: E402
from models import build_student  # noqa: E402
from models.image_teacher import ImageTeacher, calibrate_batchnorm  # noqa: E402
from opts import optim_config, parse_opts  # noqa: E402
from training.batch import to_device_batch  # noqa: E402
from training.objective import ccl_objective  # noqa: E402
from training.optim import make_optimizers  # noqa: E402
from training.precision import configure_backends, speed_mode  # noqa: E402
from training.step import train_step  # noqa: E402
from training.teachers import build_teachers, heads  # noqa: E402

CONFIGS = {"base": (False, False), "a": (True, False), "i": (False, True), "ai": (True, True)}
NO_AUDIO_SHARE = 0.1     # UCF51 has 8 of 4,901 training videos without audio; 10% stresses it
BATCH_POOL = 2           # distinct synthetic batches, cycled
SEED = 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default="ai", choices=sorted(CONFIGS),
                   help="base = no teacher, a = audio, i = image, ai = both")
    p.add_argument("--batch_size", default=16, type=int)
    p.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    p.add_argument("--exact", action="store_true", help="ours in fp32 without channels_last")
    p.add_argument("--compile", action="store_true", help="ours with torch.compile of the student, image teacher and objective (as --compile trains)")
    p.add_argument("--steps", default=20, type=int, help="timed steps")
    p.add_argument("--warmup", default=5, type=int, help="untimed steps first (compile needs a few)")
    p.add_argument("--sample_size", default=112, type=int)
    p.add_argument("--sample_duration", default=16, type=int)
    p.add_argument("--n_classes", default=51, type=int)
    p.add_argument("--impl", default="ours", choices=["ours", "original"])
    p.add_argument("--all", action="store_true",
                   help="every config × {ours default, ours exact, original} (+ ours compile with "
                        "--compile), one process each, then the ours/original ratios")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Raise UserError for options that cannot run, before anything is built."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is visible to PyTorch (use --device cpu)")
    if args.batch_size < 1 or args.steps < 1 or args.warmup < 0:
        raise UserError("--batch_size and --steps must be ≥ 1 and --warmup ≥ 0")
    if args.sample_size < 32 or args.sample_duration < 1:
        raise UserError("--sample_size must be ≥ 32 (ResNet-34 teacher) and --sample_duration ≥ 1")
    if args.n_classes < 2:
        raise UserError("--n_classes must be ≥ 2")
    if args.exact and args.compile:
        raise UserError("--exact and --compile exclude each other (compile runs on top of the default mode)")
    if args.impl == "original" and (args.exact or args.compile) and not args.all:
        raise UserError("--impl original always runs the original's fp32 step: drop --exact/--compile")


def mode_of(args: argparse.Namespace) -> str:
    if args.impl == "original" or args.exact:
        return "exact"
    return "compile" if args.compile else "default"


def synthetic_batches(batch_size: int, duration: int, size: int, n_classes: int,
                      device: torch.device, seed: int = SEED) -> list[dict]:
    """BATCH_POOL collated batches in the DESIGN item format, resident on `device`.

    clip: uint8 (B, 3, T, S, S); target: (B,) drawn from max(1, B // 2) classes, so
    every batch has repeated labels (contrastive positives); audio: (B, 512) float32,
    zero where audio_weight (B,) is 0 (each sample with probability NO_AUDIO_SHARE,
    at least one sample keeps its audio).
    """
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(BATCH_POOL):
        classes = torch.randperm(n_classes, generator=g)[:max(1, batch_size // 2)]
        target = classes[torch.randint(len(classes), (batch_size,), generator=g)]
        has_audio = torch.rand(batch_size, generator=g) >= NO_AUDIO_SHARE
        has_audio[0] = True
        audio = torch.randn(batch_size, 512, generator=g) * has_audio[:, None]
        clip = torch.randint(0, 256, (batch_size, 3, duration, size, size), generator=g, dtype=torch.uint8)
        batches.append({key: value.to(device) for key, value in
                        {"clip": clip, "target": target, "audio": audio,
                         "audio_weight": has_audio.float()}.items()})
    return batches


def untrained_image_teacher(batches: list[dict], device: torch.device) -> ImageTeacher:
    """Random ResNet-34 with BatchNorm calibrated on the batches' first frames (finite
    features without a weights file; speed does not depend on the weight values)."""
    frames = torch.cat([to_device_batch(b, device, KINETICS_MEAN, KINETICS_STD, 0).clip[:, :, 0] for b in batches])
    return calibrate_batchnorm(ImageTeacher().to(device), frames)


def make_step(args: argparse.Namespace, batches: list[dict], device: torch.device
              ) -> Callable[[dict, int], None]:
    """Build models and optimizers as training does, with the default training options;
    return `step(sample, frame_index)`."""
    optim = optim_config(parse_opts([]))
    use_audio, use_image = CONFIGS[args.config]
    student = build_student("r21d", 18, args.n_classes).to(device)
    network = untrained_image_teacher(batches, device) if use_image else None
    if network is not None and args.compile:
        network = torch.compile(network)
    teachers = build_teachers(use_audio, use_image, args.n_classes, network, args.sample_size, device)
    student.train()

    # As training sets them: PyTorch's default matmul precision, the original's.
    configure_backends(device)
    if args.impl == "original":
        head_modules = {t.name: t.head for t in teachers}
        optimizers = make_optimizers(student, heads(teachers), optim, fused=False)
        tracked = TrackedImageTeacher(network) if use_image else None

        def step(sample: dict, frame_index: int) -> None:
            batch = to_device_batch(sample, device, KINETICS_MEAN, KINETICS_STD, frame_index)
            original_step(student, head_modules, tracked, batch, optimizers, optim.loss_weight)
        return step

    mode = speed_mode(device, args.exact)
    if mode.channels_last:
        student = student.to(memory_format=torch.channels_last_3d)
    optimizers = list(make_optimizers(student, heads(teachers), optim, fused=device.type == "cuda").values())
    model = torch.compile(student) if args.compile else student
    objective = torch.compile(ccl_objective) if args.compile else ccl_objective

    def step(sample: dict, frame_index: int) -> None:
        batch = to_device_batch(sample, device, KINETICS_MEAN, KINETICS_STD, frame_index,
                                channels_last=mode.channels_last)
        train_step(model, teachers, batch, optimizers, optim.loss_weight, mode.autocast_dtype, objective)
    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor() or platform.machine())
    return f"{model} ({torch.get_num_threads()} threads)"


def peak_memory_gb(device: torch.device) -> tuple[float, str]:
    """(GB = 1e9 bytes, what was measured): CUDA allocator peak, or this process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9, "cuda_max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, "cpu_peak_rss"


def measure(args: argparse.Namespace) -> dict:
    """One cell: build, `warmup` untimed steps, then `steps` timed ones between syncs."""
    device = torch.device(args.device)
    torch.manual_seed(SEED)
    batches = synthetic_batches(args.batch_size, args.sample_duration, args.sample_size,
                                args.n_classes, device)
    step = make_step(args, batches, device)
    frames = torch.Generator().manual_seed(SEED)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps = Progress(f"{args.impl} {args.config} {mode_of(args)}", total=args.warmup + args.steps, unit="step")

    def run(first: int, count: int) -> None:
        for i in range(first, first + count):
            step(batches[i % BATCH_POOL], int(torch.randint(args.sample_duration, (1,), generator=frames)))
            steps.update()

    run(0, args.warmup)
    synchronize(device)
    start = time.perf_counter()
    run(args.warmup, args.steps)
    synchronize(device)
    elapsed = time.perf_counter() - start
    steps.close()
    peak, peak_kind = peak_memory_gb(device)
    ms = 1000 * elapsed / args.steps
    return {"impl": args.impl, "config": args.config, "batch_size": args.batch_size,
            "device": args.device, "mode": mode_of(args), "ms_per_step": round(ms, 3),
            "clips_per_s": float(f"{args.batch_size * 1000 / ms:.4g}"), "peak_mem_gb": round(peak, 3),
            "peak_mem_kind": peak_kind, "torch": torch.__version__, "device_name": device_name(device),
            "steps": args.steps, "warmup": args.warmup, "sample_size": args.sample_size,
            "sample_duration": args.sample_duration, "n_classes": args.n_classes}


def cell_commands(args: argparse.Namespace) -> list[list[str]]:
    """Arguments of every cell of `--all`, for one batch size."""
    common = ["--batch_size", str(args.batch_size), "--device", args.device, "--steps", str(args.steps),
              "--warmup", str(args.warmup), "--sample_size", str(args.sample_size),
              "--sample_duration", str(args.sample_duration), "--n_classes", str(args.n_classes)]
    variants = [["--impl", "ours"], ["--impl", "ours", "--exact"]]
    if args.compile:
        variants.append(["--impl", "ours", "--compile"])
    variants.append(["--impl", "original"])
    return [["--config", config, *common, *variant] for config in CONFIGS for variant in variants]


def ratios(records: list[dict]) -> dict[str, dict[str, float]]:
    """{config: {mode: ours clips_per_s / original clips_per_s}} over the records given."""
    original = {r["config"]: r["clips_per_s"] for r in records if r["impl"] == "original"}
    table: dict[str, dict[str, float]] = {}
    for r in records:
        if r["impl"] == "ours" and r["config"] in original:
            table.setdefault(r["config"], {})[r["mode"]] = round(r["clips_per_s"] / original[r["config"]], 3)
    return table


def run_all(args: argparse.Namespace) -> list[dict]:
    """Each cell in a fresh interpreter; prints its JSON line as soon as it is done."""
    records = []
    for cell in progress(cell_commands(args), "cells", unit="cell"):
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *cell],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"cell {' '.join(cell)} failed:\n{done.stderr.strip()[-2000:]}")
        record = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(record), flush=True)
        records.append(record)
    return records


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.all:
        records = run_all(args)
        print(json.dumps({"ratios": ratios(records), "of": "ours clips_per_s / original clips_per_s",
                          "batch_size": args.batch_size, "device": args.device,
                          "device_name": records[0]["device_name"]}), flush=True)
    else:
        print(json.dumps(measure(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
