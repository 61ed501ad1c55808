"""Video retrieval R@k and mAP (SPEC §5) from saved video features.

    python util_scripts/eval_retrieval.py --query features_validation.npz \
        --gallery features_training.npz [--result_path DIR]

Prints the metrics and writes DIR/retrieval.json (DIR defaults to the query file's folder).
Unlabeled videos (label -1) are left out of both sides.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    # Run as a file: make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from errors import ArgumentParser, exit_with_error
from evaluation.retrieval import retrieval_metrics
from evaluation.video_predictions import VideoFeatures, load_features
from training.files import write_atomically


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--query", type=Path, required=True,
                        help="features_<subset>.npz of the query videos (validation/test)")
    parser.add_argument("--gallery", type=Path, required=True,
                        help="features_<subset>.npz of the gallery videos (training)")
    parser.add_argument("--result_path", type=Path, default=None,
                        help="folder for retrieval.json (default: the query file's folder)")
    parser.add_argument("--block_size", type=int, default=1024,
                        help="queries ranked at a time (memory ~ 9 B × block × gallery size, up "
                             "to ~40 B where similarities tie)")
    parser.add_argument("--device", choices=["cpu", "cuda"],
                        default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the similarities are ranked (the same metrics either way)")
    return parser.parse_args(argv)


def _labelled(features: VideoFeatures, path: Path) -> VideoFeatures:
    keep = features.labels >= 0
    if not keep.all():
        print(f"{path}: leaving out {int((~keep).sum())} unlabeled videos")
    return VideoFeatures(features.ids[keep], features.labels[keep], features.features[keep])


def format_table(metrics: dict[str, float | int]) -> str:
    """Markdown table of the percentages in `metrics`."""
    rows = [f"| {name} | {value:.2f} |" for name, value in metrics.items()
            if isinstance(value, float)]
    return "\n".join(["| metric | % |", "|---|---|", *rows])


def main(argv: list[str] | None = None) -> dict[str, float | int]:
    args = parse_args(argv)
    result_path = args.result_path or args.query.parent
    try:
        if not result_path.is_dir():
            raise FileNotFoundError(f"--result_path {result_path} is not a folder")
        if args.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda but no CUDA device is visible (use --device cpu)")
        query = _labelled(load_features(args.query), args.query)
        gallery = _labelled(load_features(args.gallery), args.gallery)
        metrics = retrieval_metrics(query.features, query.labels, gallery.features,
                                    gallery.labels, block_size=args.block_size,
                                    device=args.device)
    except (FileNotFoundError, ValueError) as e:
        exit_with_error(str(e))
    print(f"query: {args.query} ({metrics['n_query']} videos), "
          f"gallery: {args.gallery} ({metrics['n_gallery']} videos)")
    print(format_table(metrics))
    record = {**metrics, "query": str(args.query), "gallery": str(args.gallery)}
    try:
        write_atomically(result_path / "retrieval.json", (json.dumps(record, indent=2) + "\n").encode())
    except OSError as e:   # a full disk or a folder it cannot write
        exit_with_error(f"{e.filename}: {e.strerror}; the metrics above were not saved")
    return metrics


if __name__ == "__main__":
    main()
