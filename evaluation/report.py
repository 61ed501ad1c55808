"""`report.md` and its figures for a result directory (DESIGN.md result directory).

    python -m evaluation.report --result_path DIR --annotation_path JSON [--subset validation]
    python -m evaluation.report --compare DIR [DIR ...] [--out OUT_DIR]   (evaluation.compare)

Each section is written only when its inputs are in DIR:
training curves (`train.log`, `val.log`), video classification (`val.json` + the
annotation's ground truth), a 2-D embedding of the features (`features_validation.npz`),
retrieval (`retrieval.json`; examples from `features_validation.npz` +
`features_training.npz`), the options (`opts.json`).
"""
import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from errors import ArgumentParser, exit_with_error
from evaluation import plots
from evaluation.accuracy import load_ground_truth, load_predictions, top_k_accuracy
from evaluation.compare import write_comparison
from evaluation.markdown import table
from evaluation.retrieval import nearest_neighbours
from evaluation.video_predictions import load_features
from training.files import write_atomically
from training.logs import TIMING_KEYS

N_RETRIEVAL_EXAMPLES = 5
N_NEIGHBOURS = 5
N_LISTED_CLASSES = 5

Summary = list[tuple[str, str]]


def _class_name(class_names: Sequence[str], index: int) -> str:
    if index < 0:
        return "unlabeled"
    return class_names[index] if index < len(class_names) else str(index)


def _read_log(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        log = pd.read_csv(path, sep="\t")
    except pd.errors.EmptyDataError:
        return None
    log.columns = [str(c).strip() for c in log.columns]
    return log if len(log) else None


# Numeric train.log / val.log columns that are not loss terms: drawn in no loss panel.
NOT_LOSSES = ("epoch", "lr", "skipped_steps", "bad_samples", "samples_without_audio",
              *TIMING_KEYS)


def _curves_section(result_path: Path, summary: Summary) -> list[str]:
    logs = {name: log for name in ("train", "val")
            if (log := _read_log(result_path / f"{name}.log")) is not None}
    if "val" in logs and "ce" not in logs["val"]:
        # val.log's `loss` is the clip cross-entropy alone (training.engine.validate); train.log's
        # is the whole objective, whose cross-entropy term is `ce`.
        logs["val"] = logs["val"].rename(columns={"loss": "ce"})
    if not logs:
        return []
    numeric = list(dict.fromkeys(c for log in logs.values() for c in log.columns
                                 if pd.api.types.is_numeric_dtype(log[c])))
    accuracy_columns = [c for c in numeric if "acc" in c]
    loss_columns = [c for c in numeric if c not in accuracy_columns and c not in NOT_LOSSES]
    lines = ["## Training curves", ""]
    if loss_columns:
        plots.plot_losses(logs, loss_columns, result_path / "curves_loss.png")
        lines += ["![losses per epoch](curves_loss.png)", ""]
    if accuracy_columns:
        plots.plot_accuracy(logs, accuracy_columns, result_path / "curves_accuracy.png")
        lines += ["![clip accuracy per epoch](curves_accuracy.png)", ""]
    val = logs.get("val")
    if val is not None and "acc" in val and val["acc"].notna().any():
        best = val["acc"].idxmax()
        epoch = val["epoch"][best] if "epoch" in val else best + 1
        summary.append(("best validation clip accuracy (val.log)",
                        f"{val['acc'][best]:.4g} (epoch {epoch})"))
    lines += ["Last epoch:", ""]
    lines += table(["log", *numeric],
                   [[name, *(f"{log[c].iloc[-1]:.4g}" if c in log else "" for c in numeric)]
                    for name, log in logs.items()])
    return lines


def weakest_classes_lines(names: Sequence[str], n_correct: np.ndarray,
                          n_videos: np.ndarray) -> list[str]:
    """Table of the N_LISTED_CLASSES classes of lowest top-1 among those below 100 %, lowest
    first (ties in class order).

    names: (C,) class names; n_correct: (C,) videos whose top-1 is right; n_videos: (C,) videos
    scored, each > 0.
    """
    per_class = 100 * n_correct / n_videos
    below = np.flatnonzero(n_correct < n_videos)
    if not len(below):
        return ["Every class is at 100 % top-1.", ""]
    order = below[np.argsort(per_class[below], kind="stable")][:N_LISTED_CLASSES]
    return ["Weakest classes (below 100 % top-1):", "",
            *table(["class", "top-1 %", "videos"],
                   [[names[i], f"{per_class[i]:.1f}", n_videos[i]] for i in order])]


def _classification_section(result_path: Path, class_names: Sequence[str],
                            ground_truth: dict[str, str] | None, summary: Summary) -> list[str]:
    val_json = result_path / "val.json"
    if ground_truth is None or not val_json.is_file():
        return []
    predictions = load_predictions(val_json)
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({label for label in ground_truth.values() if label not in index})
    if unknown:
        raise ValueError(f"ground-truth labels {unknown[:3]} are not among the class names: "
                         "is the annotation file the one of this result directory?")
    present = [video_id for video_id in ground_truth if video_id in predictions]
    if not present:
        return ["## Video classification", "",
                f"val.json holds none of the {len(ground_truth)} ground-truth videos.", ""]
    top1 = top_k_accuracy(ground_truth, predictions, 1, ignore=True)
    top5 = top_k_accuracy(ground_truth, predictions, 5, ignore=True)
    summary.append(("video top-1 accuracy (val.json)", f"{100 * top1.accuracy:.2f} %"))

    n = len(class_names)
    confusion = np.zeros((n, n), dtype=np.int64)
    n_unknown_predictions = 0
    for video_id in present:
        predicted = index.get(predictions[video_id][0]) if predictions[video_id] else None
        if predicted is None:
            n_unknown_predictions += 1
        else:
            confusion[index[ground_truth[video_id]], predicted] += 1
    per_class_total = np.bincount([index[ground_truth[v]] for v in present], minlength=n)
    has_videos = per_class_total > 0
    per_class = 100 * np.diag(confusion)[has_videos] / per_class_total[has_videos]
    names = [name for name, keep in zip(class_names, has_videos) if keep]

    lines = ["## Video classification", "",
             "Softmax averaged over each video's windows (SPEC §4); ground-truth videos "
             "missing from val.json are ignored (`--ignore`).", ""]
    lines += table(["measure", "value"], [
        ["top-1 accuracy", f"{100 * top1.accuracy:.2f} %"],
        ["top-5 accuracy", f"{100 * top5.accuracy:.2f} %"],
        ["videos scored", f"{len(present)} of {len(ground_truth)}"],
    ])
    if n_unknown_predictions:
        lines += [f"{n_unknown_predictions} videos have a top prediction outside the class "
                  "list; they count as wrong and are left out of the confusion matrix.", ""]
    plots.plot_per_class_accuracy(names, per_class, result_path / "per_class_accuracy.png")
    plots.plot_confusion_matrix(confusion, list(class_names), result_path / "confusion_matrix.png")
    lines += weakest_classes_lines(names, np.diag(confusion)[has_videos], per_class_total[has_videos])
    lines += ["![per-class top-1 accuracy](per_class_accuracy.png)", ""]
    off_diagonal = confusion * (1 - np.eye(n, dtype=np.int64))
    pairs = [divmod(int(flat), n) for flat in np.argsort(-off_diagonal, axis=None, kind="stable")
             [:N_LISTED_CLASSES]]
    pairs = [(t, p) for t, p in pairs if off_diagonal[t, p] > 0]
    if pairs:
        lines += ["Most frequent confusions:", ""]
        lines += table(["true", "predicted", "videos"],
                       [[class_names[t], class_names[p], off_diagonal[t, p]] for t, p in pairs])
    lines += ["![confusion matrix (rows: true class)](confusion_matrix.png)", ""]
    return lines


def _embedding_section(result_path: Path, class_names: Sequence[str]) -> list[str]:
    path = result_path / "features_validation.npz"
    if not path.is_file():
        return []
    features = load_features(path)
    if len(features.features) < 2:
        return []
    points, method = plots.embed_2d(features.features)
    plots.plot_embedding(points, features.labels, class_names, method,
                         result_path / "embedding.png")
    return ["## Feature embedding", "",
            f"{len(points)} validation videos, mean student feature per video, {method}.", "",
            f"![video features ({method})](embedding.png)", ""]


def _retrieval_section(result_path: Path, class_names: Sequence[str],
                       summary: Summary) -> list[str]:
    lines: list[str] = []
    metrics_path = result_path / "retrieval.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        percentages = [(name, value) for name, value in metrics.items()
                       if name.startswith("R@") or name == "mAP"]
        for name in ("R@1", "mAP"):
            if name in metrics:
                summary.append((f"retrieval {name}", f"{metrics[name]:.2f} %"))
        lines += [f"Queries: {metrics.get('n_query', '?')} videos, gallery: "
                  f"{metrics.get('n_gallery', '?')} videos, cosine similarity (SPEC §5).", ""]
        lines += table(["metric", "%"], [[name, f"{value:.2f}"] for name, value in percentages])
    query_path = result_path / "features_validation.npz"
    gallery_path = result_path / "features_training.npz"
    if query_path.is_file() and gallery_path.is_file():
        query, gallery = load_features(query_path), load_features(gallery_path)
        labelled = np.flatnonzero(query.labels >= 0)
        if len(labelled) and len(gallery.ids):
            chosen = np.unique(labelled[np.linspace(0, len(labelled) - 1,
                                                    N_RETRIEVAL_EXAMPLES).astype(int)])
            neighbours = nearest_neighbours(query.features[chosen], gallery.features,
                                            N_NEIGHBOURS).numpy()
            lines += ["Examples (✓ = same class as the query):", ""]
            for q, ranked in zip(chosen, neighbours):
                label = query.labels[q]
                lines.append(f"- `{query.ids[q]}` ({_class_name(class_names, label)})")
                for rank, g in enumerate(ranked, start=1):
                    mark = "✓" if gallery.labels[g] == label else "✗"
                    lines.append(f"    {rank}. {mark} `{gallery.ids[g]}` "
                                 f"({_class_name(class_names, gallery.labels[g])})")
            lines.append("")
    return ["## Retrieval", "", *lines] if lines else []


def _options_section(result_path: Path) -> list[str]:
    path = result_path / "opts.json"
    if not path.is_file():
        return []
    options = json.loads(path.read_text())
    rows = [[f"`{name}`", value if isinstance(value, str) else json.dumps(value)]
            for name, value in options.items()]
    return ["## Options", "", *table(["option", "value"], rows)]


def write_report(result_path: Path | str, class_names: list[str],
                 ground_truth: dict[str, str] | None = None) -> Path:
    """Write `report.md` and its PNG figures into `result_path`; returns the report's path.

    class_names: label names in index order (the annotation JSON's `labels`).
    ground_truth: {video_id: label name} of the evaluated subset, for the classification
        section (`evaluation.accuracy.load_ground_truth`); without it that section is left out.
    """
    result_path = Path(result_path)
    if not result_path.is_dir():
        raise FileNotFoundError(f"{result_path} is not a folder (pass the --result_path "
                                "of a training or inference run)")
    summary: Summary = []
    sections = [_curves_section(result_path, summary),
                _classification_section(result_path, class_names, ground_truth, summary),
                _embedding_section(result_path, class_names),
                _retrieval_section(result_path, class_names, summary),
                _options_section(result_path)]
    lines = [f"# Report: {result_path.resolve().name}", ""]
    if summary:
        lines += ["## Summary", "", *table(["measure", "value"], summary)]
    for section in sections:
        lines += section
    if len(lines) == 2:
        lines += ["Nothing to report yet: no logs, val.json, features or retrieval.json "
                  "in this folder.", ""]
    report = result_path / "report.md"
    write_atomically(report, "\n".join(lines).encode())
    return report


def main(argv: list[str] | None = None) -> Path:
    parser = ArgumentParser(
        description="Write report.md for a result directory, or one comparing several (--compare).")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--result_path", type=Path, help="the result directory to report on")
    target.add_argument("--compare", type=Path, nargs="+", metavar="DIR",
                        help="result directories to compare: report.md and comparison.png of "
                             "top-1, R@k, mAP and the options that differ, in --out")
    parser.add_argument("--out", type=Path, default=None,
                        help="with --compare: where its report.md goes (default: the "
                             "directories' common parent)")
    parser.add_argument("--annotation_path", type=Path, default=None,
                        help="annotation JSON: class names and ground truth (without it there is "
                             "no classification section; with --compare, default: each run's "
                             "opts.json's)")
    parser.add_argument("--subset", type=str, default="validation",
                        help="subset of the annotation that val.json was made for")
    args = parser.parse_args(argv)
    if args.out is not None and args.compare is None:
        parser.error("--out goes with --compare")
    try:
        if args.compare is not None:
            report = write_comparison(args.compare, args.out, args.annotation_path, args.subset)
        else:
            class_names: list[str] = []
            ground_truth = None
            if args.annotation_path is not None:
                ground_truth, class_names = load_ground_truth(args.annotation_path, args.subset)
            report = write_report(args.result_path, class_names, ground_truth)
    except ValueError as e:
        exit_with_error(str(e))
    except OSError as e:   # a missing input, or report.md / a figure that cannot be written
        exit_with_error(str(e) if e.strerror is None else f"{e.filename}: {e.strerror}")
    print(report)
    return report


if __name__ == "__main__":
    main()
