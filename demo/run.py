"""`python main.py --demo`: baseline vs CCL (A), CCL (I) and CCL (AI) on the built-in dataset,
on the CPU.

Design and measured results: docs/DEMO.md.
"""
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from demo.data import CLASSES, SIZE, build_demo_dataset
from demo.image_teacher import RECORD_FILE, demo_teacher_weights
from demo.textures import N_CONCEPTS
from opts import Config, parse_opts, resolve

# The image teacher is the ResNet-18 that demo/image_teacher.py trains on its own image set
# (the demo's ImageNet), loaded through --image_teacher / --image_teacher_weights.
IMAGE_TEACHER = "resnet18"
CONFIGS = {
    "baseline": [],
    "ccl_a": ["--use_audio"],
    "ccl_i": ["--use_image"],
    "ccl_ai": ["--use_audio", "--use_image"],
}
METRICS = ("top1", "R@1", "mAP")
CLIP_FRAMES = 8          # --sample_duration: 3 non-overlapping inference windows per 24-frame video
LEARNING_RATE = 0.01     # the paper's 0.001 is for 300 epochs; the demo has a few hundred steps
VAL_EVERY = 6            # clip-level validation is only for the curves of report.md


def demo_options(paths: dict[str, Path], teacher_weights: Path, result_path: Path, config: str,
                 seed: int, epochs: int) -> list[str]:
    """main.py options of one demo run: the real entry point's flags at a small scale.

    The student's learning rate drops ×0.1 for the last quarter of the epochs (the paper's
    drops at 1/2 and 3/4 of its 300). The image teacher sees the clip's frame at the clip's
    own size, the size it was trained at (no upsampling to 112 px). `--checkpoint` lies past
    the last epoch: no `save_<epoch>.pth` besides the files the runner always keeps.
    """
    milestone = max(1, round(0.75 * epochs))
    return ["--video_path", str(paths["video_path"]), "--audio_path", str(paths["audio_path"]),
            "--annotation_path", str(paths["annotation_path"]), "--result_path", str(result_path),
            "--n_classes", str(len(CLASSES)), "--sample_size", str(SIZE),
            "--sample_duration", str(CLIP_FRAMES), "--inference_stride", str(CLIP_FRAMES),
            "--image_teacher", IMAGE_TEACHER, "--image_teacher_weights", str(teacher_weights),
            "--image_size", str(SIZE), "--batch_size", "16", "--n_epochs", str(epochs),
            "--learning_rate", str(LEARNING_RATE), "--multistep_milestones", str(milestone),
            "--checkpoint", str(epochs + 1), "--val_freq", str(min(VAL_EVERY, epochs)),
            "--n_threads", "0", "--no_cuda", "--no-tensorboard", "--manual_seed", str(seed),
            "--inference", "--retrieval", *CONFIGS[config]]


def run_demo(opt, train_and_evaluate: Callable[[Config, torch.device], dict],
             build_data=build_demo_dataset, build_teacher=demo_teacher_weights,
             configs: tuple[str, ...] = tuple(CONFIGS)) -> int:
    """Build the demo data, train the image teacher, train each configuration for each seed,
    print a table.

    train_and_evaluate(config, device) -> results: one run (`main.train_and_evaluate`).
    build_data(root) -> paths: the dataset builder (tests pass a smaller one).
    build_teacher(root) -> weights file: the image teacher's trainer (tests pass a shorter one);
    its weights and `image_teacher.json` (settings, held-out top-1) go to `<result_path>/demo/teacher/`.
    Results go to `<result_path>/demo/<config>_seed<k>/` (a full result directory each,
    with report.md for the last seed; the checkpoints are deleted, the demo evaluates the
    final in-memory student), a summary to `<result_path>/demo/summary.json` and the
    comparison of every run to `<result_path>/demo/report.md` (evaluation.compare).
    """
    from evaluation.compare import write_comparison

    start = time.time()
    root = Path(opt.result_path) / "demo"
    paths = build_data(root / "data")
    data_seconds = time.time() - start
    print(f"demo data ready in {data_seconds:.0f} s: {root / 'data'}", flush=True)
    teacher_weights = build_teacher(root / "teacher")
    teacher = json.loads((teacher_weights.parent / RECORD_FILE).read_text())
    teacher_seconds = time.time() - start - data_seconds
    print(f"image teacher ({IMAGE_TEACHER}) ready in {teacher_seconds:.0f} s: held-out top-1 "
          f"{100 * teacher['held_out_top1']:.1f}% over {N_CONCEPTS} concepts (chance "
          f"{100 / N_CONCEPTS:.1f}%), {teacher_weights}", flush=True)
    logging.basicConfig(level=logging.WARNING, force=True)
    rows: dict[str, list[dict]] = {config: [] for config in configs}
    folders: dict[str, list[Path]] = {config: [] for config in configs}
    for seed in range(1, opt.demo_seeds + 1):
        for config in configs:
            result_path = root / f"{config}_seed{seed}"
            result_path.mkdir(parents=True, exist_ok=True)
            argv = demo_options(paths, teacher_weights, result_path, config, seed, opt.demo_epochs)
            if seed == opt.demo_seeds:
                argv.append("--report")
            run_start = time.time()
            results = train_and_evaluate(resolve(parse_opts(argv)), torch.device("cpu"))
            for checkpoint in result_path.glob("*.pth"):
                checkpoint.unlink()
            row = {"top1": 100 * results["top1"], "R@1": results["retrieval"]["R@1"],
                   "mAP": results["retrieval"]["mAP"], "seconds": time.time() - run_start}
            rows[config].append(row)
            folders[config].append(result_path)
            print(f"  {config:9s} seed {seed}: top-1 {row['top1']:5.1f}  R@1 {row['R@1']:5.1f}  "
                  f"mAP {row['mAP']:5.1f}  "
                  f"({row['seconds']:.0f} s, {time.time() - start:.0f} s in all)", flush=True)
    summary = {"epochs": opt.demo_epochs, "seeds": opt.demo_seeds, "data_seconds": data_seconds,
               "teacher_seconds": teacher_seconds, "teacher_held_out_top1": 100 * teacher["held_out_top1"],
               "total_seconds": time.time() - start, "runs": rows,
               "mean": {config: {m: statistics.mean(r[m] for r in runs) for m in METRICS}
                        for config, runs in rows.items()}}
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    comparison = write_comparison([folder for runs in folders.values() for folder in runs], root)
    print(format_table(rows))
    print(f"total {summary['total_seconds']:.0f} s; results and reports: {root}; comparison: {comparison}")
    return 0


def format_table(rows: dict[str, list[dict]]) -> str:
    """Markdown table: mean ± sample std over seeds of video top-1, retrieval R@1 and mAP."""
    lines = ["", "| config | video top-1 (%) | retrieval R@1 (%) | retrieval mAP (%) | seeds |",
             "|---|---|---|---|---|"]
    for config, runs in rows.items():
        cells = []
        for metric in METRICS:
            values = [r[metric] for r in runs]
            spread = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.1f}{spread}")
        lines.append(f"| {config} | {' | '.join(cells)} | {len(runs)} |")
    return "\n".join(lines)
