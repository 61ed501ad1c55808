"""report.md and its figures on a tiny fake result directory."""
import json
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from evaluation import plots, report
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
    # As training.engine.validate writes it: `loss` is the clip cross-entropy.
    (result_path / "val.log").write_text(
        "epoch\tloss\tacc\n1\t2.7\t0.25\n2\t2.2\t0.50\n3\t2.1\t0.40\n")


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
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--result_path", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("error:")


def test_pca_embedding_matches_svd():
    features = np.random.default_rng(0).normal(size=(20, 6)) * np.arange(1, 7)
    points, method = embed_2d(features)
    centred = features - features.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:2].T
    assert method == "PCA"
    assert np.allclose(np.abs(points), np.abs(expected), atol=1e-8)


def test_weakest_classes_lists_only_classes_below_100_percent():
    names = ["a", "b", "c", "d", "e"]
    n_correct = np.array([2, 1, 0, 3, 2])
    n_videos = np.array([2, 2, 1, 3, 3])
    lines = report.weakest_classes_lines(names, n_correct, n_videos)
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| class")]
    # c 0 %, b 50 %, e 66.7 %; a and d are at 100 %.
    assert rows == ["| c | 0.0 | 1 |", "| b | 50.0 | 2 |", "| e | 66.7 | 3 |"]
    assert report.weakest_classes_lines(names[:2], np.array([2, 3]), np.array([2, 3])) == \
        ["Every class is at 100 % top-1.", ""]
    many = report.weakest_classes_lines([str(i) for i in range(8)], np.zeros(8, int), np.ones(8, int))
    assert sum(line.startswith("| ") for line in many) == 1 + report.N_LISTED_CLASSES


def test_full_report_weakest_classes_leave_out_the_perfect_one(tmp_path):
    ground_truth, _ = make_result_dir(tmp_path)
    text = report.write_report(tmp_path, CLASSES, ground_truth).read_text()
    weakest = text.split("Weakest classes")[1].split("![")[0]
    # jump: 1 of 2, run: 2 of 2, swim: 1 of 2.
    assert "| jump | 50.0 | 2 |" in weakest and "| swim | 50.0 | 2 |" in weakest
    assert "| run |" not in weakest


def test_loss_curves_keep_the_total_loss_apart_from_validation_cross_entropy(tmp_path, monkeypatch):
    write_logs(tmp_path)
    drawn = {}

    def keep(function):
        def wrapper(*args):
            drawn[function.__name__] = function(*args)
            return drawn[function.__name__]
        return wrapper
    monkeypatch.setattr(plots, "plot_losses", keep(plots.plot_losses))
    monkeypatch.setattr(plots, "plot_accuracy", keep(plots.plot_accuracy))
    report.write_report(tmp_path, CLASSES)
    panels = {ax.get_title(): {line.get_label(): line for line in ax.get_lines()}
              for ax in drawn["plot_losses"].axes if ax.get_visible()}
    assert set(panels["training total loss"]) == {"train"}
    assert list(panels["training total loss"]["train"].get_ydata()) == [2.5, 2.0, 1.6]
    assert set(panels["cross-entropy"]) == {"train", "val"}
    assert list(panels["cross-entropy"]["val"].get_ydata()) == [2.7, 2.2, 2.1]     # val.log's loss
    assert list(panels["cross-entropy"]["train"].get_ydata()) == [1.5, 1.2, 1.0]   # train.log's ce
    accuracy = {line.get_label(): line for line in drawn["plot_accuracy"].axes[0].get_lines()}
    for line in (panels["cross-entropy"]["val"], accuracy["val"]):
        assert line.get_marker() not in (None, "None", "", " ")


def test_a_single_validation_point_is_drawn(tmp_path):
    log = pd.DataFrame({"epoch": [4], "acc": [0.5]})
    figure = plots.plot_accuracy({"val": log}, ["acc"], tmp_path / "acc.png")
    line = figure.axes[0].get_lines()[0]
    assert line.get_marker() not in (None, "None", "", " ")


def label_boxes(figure, labels):
    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw(renderer)
    return [label.get_window_extent(renderer) for label in labels]


@pytest.mark.parametrize("n_classes", [6, 51])
def test_class_names_are_readable(tmp_path, n_classes):
    # UCF101-like names, the longest 19 characters.
    names = [f"{'HandstandPushups' if i % 2 else 'YoYo'}{i:03d}" for i in range(n_classes)]
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 5, size=(n_classes, n_classes))
    accuracy = rng.uniform(0, 100, size=n_classes)
    figures = {"confusion": plots.plot_confusion_matrix(confusion, names, tmp_path / "c.png"),
               "per_class": plots.plot_per_class_accuracy(names, accuracy, tmp_path / "p.png")}
    axes = {"confusion": [("x", figures["confusion"].axes[0].get_xticklabels()),
                          ("y", figures["confusion"].axes[0].get_yticklabels())],
            "per_class": [("y", figures["per_class"].axes[0].get_yticklabels())]}
    for name, figure in figures.items():
        page = figure.bbox
        for direction, labels in axes[name]:
            assert [label.get_text() for label in labels if label.get_text()] != []
            texts = {label.get_text() for label in labels}
            assert texts == set(names), (name, direction)
            assert min(label.get_fontsize() for label in labels) >= 8, name
            boxes = label_boxes(figure, labels)
            # Every name whole on the page, and no two neighbours overlapping.
            for box in boxes:
                assert page.x0 - 0.5 <= box.x0 and box.x1 <= page.x1 + 0.5, (name, direction)
                assert page.y0 - 0.5 <= box.y0 and box.y1 <= page.y1 + 0.5, (name, direction)
            spans = sorted((box.x0, box.x1) if direction == "x" else (box.y0, box.y1) for box in boxes)
            assert all(low_next >= high for (_, high), (low_next, _) in zip(spans, spans[1:])), (name, direction)
