"""report.md and its figures on a tiny fake result directory."""
import json
import re

import numpy as np
import pytest

from evaluation import report
from evaluation.plots import embed_2d
from evaluation.retrieval import retrieval_metrics
from evaluation.video_predictions import save_features, write_val_json

CLASSES = ["jump", "run", "swim"]
ALL_FIGURES = {"curves_loss.png", "curves_accuracy.png", "per_class_accuracy.png",
               "confusion_matrix.png", "embedding.png"}


def write_logs(result_path):
    (result_path / "train.log").write_text(
        "epoch\tloss\tacc\tlr\tce\tnce_audio\n"
        "1\t2.5\t0.30\t0.001\t1.5\t1.0\n2\t2.0\t0.45\t0.001\t1.2\t0.8\n3\t1.6\t0.60\t0.001\t1.0\t0.6\n")
    (result_path / "val.log").write_text(
        "epoch\tloss\tacc\tce\n1\t2.7\t0.25\t1.6\n2\t2.2\t0.50\t1.3\n3\t2.1\t0.40\t1.2\n")


def make_result_dir(result_path):
    write_logs(result_path)
    rng = np.random.default_rng(0)
    video_ids = [f"val_{i}" for i in range(6)]
    labels = np.array([0, 0, 1, 1, 2, 2])
    # Top-1 predictions: jump, run | run, run | swim, jump → 4 of 6 right.
    predicted = [0, 1, 1, 1, 2, 0]
    scores = np.full((6, 3), 0.1)
    scores[np.arange(6), predicted] = 0.8
    write_val_json(result_path / "val.json", video_ids, scores, CLASSES, topk=3)
    ground_truth = {v: CLASSES[label] for v, label in zip(video_ids, labels)}
    ground_truth["val_missing"] = "run"            # not in val.json: ignored
    query = rng.normal(size=(6, 16)).astype(np.float32)
    gallery = rng.normal(size=(9, 16)).astype(np.float32)
    gallery_labels = np.arange(9) % 3
    save_features(result_path / "features_validation.npz", video_ids, labels, query)
    save_features(result_path / "features_training.npz", [f"train_{i}" for i in range(9)],
                  gallery_labels, gallery)
    metrics = retrieval_metrics(query, labels, gallery, gallery_labels)
    (result_path / "retrieval.json").write_text(json.dumps(metrics))
    (result_path / "opts.json").write_text(json.dumps({"model": "r21d", "milestones": [150, 225]}))
    return ground_truth, metrics


def linked_images(text):
    return set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text))


def test_full_report(tmp_path):
    ground_truth, metrics = make_result_dir(tmp_path)
    path = report.write_report(tmp_path, CLASSES, ground_truth)
    text = path.read_text()
    pngs = {p.name for p in tmp_path.glob("*.png")}
    assert pngs == ALL_FIGURES
    assert all((tmp_path / name).stat().st_size > 1000 for name in pngs)
    assert linked_images(text) == pngs
    assert "| video top-1 accuracy (val.json) | 66.67 % |" in text     # 4 of 6
    assert "| videos scored | 6 of 7 |" in text
    assert f"| R@1 | {metrics['R@1']:.2f} |" in text
    assert f"| mAP | {metrics['mAP']:.2f} |" in text
    assert "| best validation clip accuracy (val.log) | 0.5 (epoch 2) |" in text
    assert "| `milestones` | [150, 225] |" in text
    # Retrieval examples: 5 queries × 5 neighbours, each marked.
    assert len(re.findall(r"^    \d\. [✓✗] `train_\d`", text, flags=re.M)) == 25


def test_sections_appear_only_with_their_inputs(tmp_path):
    write_logs(tmp_path)
    text = report.write_report(tmp_path, CLASSES).read_text()
    assert {p.name for p in tmp_path.glob("*.png")} == {"curves_loss.png",
                                                         "curves_accuracy.png"}
    assert linked_images(text) == {"curves_loss.png", "curves_accuracy.png"}
    assert "## Retrieval" not in text and "## Video classification" not in text

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "Nothing to report yet" in report.write_report(empty, CLASSES).read_text()


def test_command_line(tmp_path, capsys):
    ground_truth, _ = make_result_dir(tmp_path)
    annotation = tmp_path / "annotation.json"
    annotation.write_text(json.dumps({"labels": CLASSES, "database": {
        v: {"subset": "validation", "annotations": {"label": label, "segment": [1, 17]}}
        for v, label in ground_truth.items()}}))
    path = report.main(["--result_path", str(tmp_path), "--annotation_path", str(annotation)])
    assert "## Video classification" in path.read_text()
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--result_path", str(tmp_path / "nowhere")])
    assert str(exit_info.value.code).startswith("error:")


def test_pca_embedding_matches_svd():
    features = np.random.default_rng(0).normal(size=(20, 6)) * np.arange(1, 7)
    points, method = embed_2d(features)
    centred = features - features.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:2].T
    assert method == "PCA"
    assert np.allclose(np.abs(points), np.abs(expected), atol=1e-8)
