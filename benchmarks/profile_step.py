"""Where a training step's time goes: the host launching work, or the device doing it.

    python benchmarks/profile_step.py --config ai --batch_size 16 --device cuda
    python benchmarks/profile_step.py --config ai --batch_size 16 --device cuda --compile --compile_mode reduce-overhead

Builds the step exactly as `bench_train_step.py` does (same options), runs `--warmup`
steps, then `--steps` steps under `torch.profiler`, and prints one JSON line per step
average: `wall_ms` (between device syncs, profiler on), `kernel_ms` (the sum of the
device's kernel times: the work the GPU must do), `kernels` (launches) and `host_ops`
(top-level operator calls on the host). A step whose `wall_ms` is well above its
`kernel_ms` is bound by the host, and goes faster only with fewer launches (fused
kernels, CUDA graphs), not with faster kernels. The 25 costliest operators (by host time)
and kernels (by device time) go to stderr.

`--compile_mode` (torch.compile's `mode`: default, reduce-overhead, max-autotune,
max-autotune-no-cudagraphs) applies to this measurement only: `main.py --compile` uses
torch.compile's default mode.
"""
from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_train_step as bench  # noqa: E402

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def build_parser():
    parser = bench.build_parser()
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("--compile_mode", default="default", choices=COMPILE_MODES,
                        help="torch.compile's mode for --compile (this measurement only)")
    parser.set_defaults(steps=10)
    return parser


def is_top_level_op(event) -> bool:
    """A host operator not called from inside another operator (autograd's backward
    calls count as top level): one dispatch each."""
    return (event.device_type == DeviceType.CPU and event.name.startswith("aten::")
            and (event.cpu_parent is None or not event.cpu_parent.name.startswith("aten::")))


def profile_cell(args) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(bench.SEED)
    batches = bench.synthetic_batches(args.batch_size, args.sample_duration, args.sample_size,
                                      args.n_classes, device)
    if args.compile and args.compile_mode != "default":
        torch.compile = functools.partial(torch.compile, mode=args.compile_mode)
    step = bench.make_step(args, batches, device)
    frames = torch.Generator().manual_seed(bench.SEED)

    def run(first: int, count: int) -> None:
        for i in range(first, first + count):
            step(batches[i % bench.BATCH_POOL], int(torch.randint(args.sample_duration, (1,), generator=frames)))

    run(0, args.warmup)
    bench.synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        run(args.warmup, args.steps)
        bench.synchronize(device)
        elapsed = time.perf_counter() - start
    events = prof.events()
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    table = prof.key_averages()
    print(table.table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)
    if kernels:
        print(table.table(sort_by="self_device_time_total", row_limit=25), file=sys.stderr)
    return {"profile": "train_step", "impl": args.impl, "config": args.config, "batch_size": args.batch_size,
            "device": args.device, "mode": bench.mode_of(args),
            "compile_mode": args.compile_mode if args.compile else None,
            "wall_ms": round(1000 * elapsed / args.steps, 3),
            "kernel_ms": round(sum(e.time_range.elapsed_us() for e in kernels) / 1000 / args.steps, 3),
            "kernels": round(len(kernels) / args.steps, 1),
            "host_ops": round(sum(is_top_level_op(e) for e in events) / args.steps, 1),
            "torch": torch.__version__, "device_name": bench.device_name(device), "steps": args.steps,
            "warmup": args.warmup, "sample_size": args.sample_size, "sample_duration": args.sample_duration,
            "n_classes": args.n_classes}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        bench.check_args(args)
        if args.all:
            raise bench.UserError("--all is bench_train_step.py's; profile one cell at a time")
    except bench.UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(profile_cell(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
