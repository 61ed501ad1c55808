"""`python main.py --demo`: baseline vs CCL (AI) on the built-in dataset, on the CPU."""
import json
import logging
import statistics
import time
from pathlib import Path

from demo.data import CLASSES, SIZE, build_demo_dataset
from opts import parse_opts

CONFIGS = {"baseline": [], "ccl_ai": ["--use_audio", "--use_image", "--allow_untrained_teacher"]}


def demo_options(paths: dict[str, Path], result_path: Path, config: str, seed: int, epochs: int) -> list[str]:
    """The options of one demo run: the real entry point's flags at a small scale."""
    return ["--video_path", str(paths["video_path"]), "--audio_path", str(paths["audio_path"]),
            "--annotation_path", str(paths["annotation_path"]), "--result_path", str(result_path),
            "--n_classes", str(len(CLASSES)), "--sample_size", str(SIZE), "--sample_duration", "8",
            "--batch_size", "16", "--n_epochs", str(epochs), "--learning_rate", "0.003",
            "--multistep_milestones", str(epochs + 1), "--checkpoint", str(epochs),
            "--n_threads", "0", "--no_cuda", "--manual_seed", str(seed), "--inference", "--retrieval",
            *CONFIGS[config]]


def run_demo(opt) -> int:
    """Build the demo data, train each configuration for each seed, print a table.

    Results go to `<result_path>/demo/<config>_seed<k>/` (a full result directory each,
    with report.md for the last seed) and a summary to `<result_path>/demo/summary.json`.
    """
    from training.session import run

    root = Path(opt.result_path) / "demo"
    paths = build_demo_dataset(root / "data")
    logging.basicConfig(level=logging.WARNING, force=True)
    rows: dict[str, list[dict]] = {config: [] for config in CONFIGS}
    start = time.time()
    for seed in range(1, opt.demo_seeds + 1):
        for config in CONFIGS:
            result_path = root / f"{config}_seed{seed}"
            result_path.mkdir(parents=True, exist_ok=True)
            argv = demo_options(paths, result_path, config, seed, opt.demo_epochs)
            if seed == opt.demo_seeds:
                argv.append("--report")
            results = run(parse_opts(argv), _cpu())
            rows[config].append({"top1": 100 * results["top1"], "R@1": results["retrieval"]["R@1"]})
            print(f"  {config:9s} seed {seed}: top-1 {rows[config][-1]['top1']:5.1f}  "
                  f"R@1 {rows[config][-1]['R@1']:5.1f}  ({time.time() - start:.0f} s)", flush=True)
    summary = {config: {metric: statistics.mean(r[metric] for r in runs) for metric in ("top1", "R@1")}
               for config, runs in rows.items()}
    (root / "summary.json").write_text(json.dumps({"runs": rows, "mean": summary}, indent=2) + "\n")
    print(format_table(rows))
    print(f"results and reports: {root}")
    return 0


def format_table(rows: dict[str, list[dict]]) -> str:
    lines = ["", "| config | video top-1 (%) | retrieval R@1 (%) | seeds |", "|---|---|---|---|"]
    for config, runs in rows.items():
        cells = []
        for metric in ("top1", "R@1"):
            values = [r[metric] for r in runs]
            spread = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.1f}{spread}")
        lines.append(f"| {config} | {cells[0]} | {cells[1]} | {len(runs)} |")
    return "\n".join(lines)


def _cpu():
    import torch
    return torch.device("cpu")
