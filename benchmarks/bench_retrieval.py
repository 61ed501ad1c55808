"""Retrieval metrics at scale: ours against two plain rankings, side by side.

    python benchmarks/bench_retrieval.py --gallery 50000 --queries 10000
    python benchmarks/bench_retrieval.py --gallery 200000 --queries 20000 --impls ours values
    python benchmarks/bench_retrieval.py --gallery 50000 --queries 10000 --device cuda

Random `--dim`-d features with uniformly drawn labels of `--classes` classes (optionally a
share of the gallery duplicated, which makes tied similarities). Each implementation of
`--impls` (default: all; on CUDA only ours) runs in its own process (clean peak memory),
printing one JSON line, and a last line compares ours with the others:

- `ours`: `evaluation.retrieval.retrieval_metrics` (float64 similarities compared at
  float32, ties in gallery order).
- `argsort`: the straightforward NumPy ranking: per block of queries, the same float64
  similarities at float32, a stable argsort of every row, relevance and precision over the
  full ranking.
(Every implementation multiplies with torch's matmul, so the same BLAS.)
- `values`: float32 similarities, each row's values sorted and each same-class item's rank
  found by binary search, ties ignored: the least work these metrics need.
- `values64`: the same with ours' similarities (float64, compared at float32): what the
  tie rule's float64 matmul adds, apart from handling ties.

Line keys: impl, gallery, queries, dim, classes, duplicates, block_size, device, threads,
seconds (the metric call alone), peak_rss_gb (the process's peak resident set),
rss_growth_gb (peak minus the resident set just before the call: what the call adds),
cuda_peak_gb on CUDA, and the metrics.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.retrieval import retrieval_metrics  # noqa: E402

IMPLS = ("ours", "argsort", "values", "values64")
KS = (1, 5, 10, 20)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--gallery", type=int, default=10_000)
    p.add_argument("--queries", type=int, default=2_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=300)
    p.add_argument("--duplicates", type=float, default=0.0,
                   help="share of gallery items that copy another item (tied similarities)")
    p.add_argument("--block_size", type=int, default=1024)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS),
                   help="implementations to compare, each in its own process")
    p.add_argument("--impl", choices=IMPLS, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_case(args: argparse.Namespace):
    """(query (Q, D), query labels (Q,), gallery (G, D), gallery labels (G,)), float32/int64."""
    rng = np.random.default_rng(args.seed)
    gallery = rng.standard_normal((args.gallery, args.dim), dtype=np.float32)
    gallery_labels = rng.integers(0, args.classes, args.gallery)
    n_copies = int(args.duplicates * args.gallery)
    if n_copies:
        copies = rng.choice(args.gallery, n_copies, replace=False)
        gallery[copies] = gallery[rng.integers(0, args.gallery, n_copies)]
    query = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    query_labels = rng.integers(0, args.classes, args.queries)
    return query, query_labels, gallery, gallery_labels


def _unit(x: np.ndarray, dtype) -> np.ndarray:
    x = x.astype(dtype)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _similarity(query_unit: np.ndarray, gallery_unit: np.ndarray) -> np.ndarray:
    """float32 (b, G) products, through torch's matmul as ours (NumPy's BLAS may differ)."""
    return (torch.from_numpy(query_unit) @ torch.from_numpy(gallery_unit).T).float().numpy()


def _metrics(first_hit: np.ndarray, average_precision: np.ndarray) -> dict[str, float]:
    """first_hit: (Q,) 1-based rank of the first relevant item, 0 when none."""
    metrics = {f"R@{k}": 100.0 * float(((first_hit > 0) & (first_hit <= k)).mean()) for k in KS}
    metrics["mAP"] = 100.0 * float(average_precision.mean())
    return metrics


def argsort_metrics(query, query_labels, gallery, gallery_labels, block_size):
    gallery64 = _unit(gallery, np.float64)
    first_hit = np.zeros(len(query), np.int64)
    average_precision = np.zeros(len(query))
    ranks = np.arange(1, len(gallery) + 1)
    for start in range(0, len(query), block_size):
        block = slice(start, start + block_size)
        similarity = _similarity(_unit(query[block], np.float64), gallery64)
        order = np.argsort(-similarity, axis=1, kind="stable")
        del similarity
        relevant = gallery_labels[order] == query_labels[block, None]
        del order
        hits = relevant.cumsum(axis=1)
        n_relevant = hits[:, -1]
        average_precision[block] = (np.where(relevant, hits / ranks, 0.0).sum(axis=1)
                                    / np.maximum(n_relevant, 1))
        first_hit[block] = np.where(n_relevant > 0, relevant.argmax(axis=1) + 1, 0)
    return _metrics(first_hit, average_precision)


def values_metrics(query, query_labels, gallery, gallery_labels, block_size, dtype=np.float32):
    gallery_unit = _unit(gallery, dtype)
    members = {c: np.flatnonzero(gallery_labels == c) for c in np.unique(gallery_labels)}
    empty = np.empty(0, np.int64)
    first_hit = np.zeros(len(query), np.int64)
    average_precision = np.zeros(len(query))
    for start in range(0, len(query), block_size):
        similarity = _similarity(_unit(query[start:start + block_size], dtype), gallery_unit)
        ascending = np.sort(similarity, axis=1)
        labels = query_labels[start:start + block_size]
        for row, (values, label) in enumerate(zip(ascending, labels)):
            relevant = similarity[row, members.get(label, empty)]
            ranks = np.sort(len(gallery) - np.searchsorted(values, relevant, side="right") + 1)
            if len(ranks):
                first_hit[start + row] = ranks[0]
                average_precision[start + row] = np.mean(np.arange(1, len(ranks) + 1) / ranks)
    return _metrics(first_hit, average_precision)


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e9


def run_one(args: argparse.Namespace) -> dict:
    if args.device == "cuda" and args.impl != "ours":
        raise SystemExit("error: only --impl ours runs on CUDA")
    case = make_case(args)
    before = rss_gb()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if args.impl == "ours":
        metrics = retrieval_metrics(*case, ks=KS, block_size=args.block_size, device=args.device)
        if args.device == "cuda":
            torch.cuda.synchronize()
    elif args.impl == "argsort":
        metrics = argsort_metrics(*case, args.block_size)
    else:
        metrics = values_metrics(*case, args.block_size,
                                 np.float64 if args.impl == "values64" else np.float32)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    record = {"impl": args.impl, "gallery": args.gallery, "queries": args.queries,
              "dim": args.dim, "classes": args.classes, "duplicates": args.duplicates,
              "block_size": args.block_size, "device": args.device,
              "threads": torch.get_num_threads(), "seconds": round(seconds, 3),
              "peak_rss_gb": round(peak, 3), "rss_growth_gb": round(peak - before, 3)}
    if args.device == "cuda":
        record["cuda_peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
    record.update({name: round(value, 6) for name, value in metrics.items()})
    return record


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.impl is not None:
        print(json.dumps(run_one(args)), flush=True)
        return 0
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--impls" in argv:   # the children run one implementation each
        start = argv.index("--impls")
        end = next((i for i in range(start + 1, len(argv)) if argv[i].startswith("--")), len(argv))
        del argv[start:end]
    impls = ["ours"] if args.device == "cuda" else args.impls
    records = {}
    for impl in impls:
        out = subprocess.run([sys.executable, __file__, *argv, "--impl", impl], check=True,
                             capture_output=True, text=True).stdout
        print(out.strip(), flush=True)
        records[impl] = json.loads(out)
    if "ours" in records and len(records) > 1:
        names = [f"R@{k}" for k in KS] + ["mAP"]
        print(json.dumps({
            "compare": "ours",
            "seconds_ratio": {impl: round(records["ours"]["seconds"] / r["seconds"], 3)
                              for impl, r in records.items() if impl != "ours"},
            "max_metric_difference": {impl: max(abs(records["ours"][n] - r[n]) for n in names)
                                      for impl, r in records.items() if impl != "ours"}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
