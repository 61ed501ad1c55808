"""The built-in demo: its dataset holds what it claims, and `--demo` runs end to end."""
import functools
import importlib.util
import json
import statistics

import h5py
import numpy as np
import pytest

from demo import data as demo_data, textures
from demo.image_teacher import WEIGHTS_FILE, TeacherSettings, demo_teacher_weights
from demo.run import format_table, run_demo
from errors import Terminated
import main
from main import train_and_evaluate
from opts import parse_opts
from tests.test_evaluation_retrieval import SAVED_KS, brute_force_metrics

TRAIN, VAL, MISSING = 8, 2, 0.3
PYAV_REASON = "the demo dataset's videos are encoded and converted with PyAV"
needs_pyav = pytest.mark.skipif(importlib.util.find_spec("av") is None, reason=PYAV_REASON)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    pytest.importorskip("av", reason=PYAV_REASON)
    root = tmp_path_factory.mktemp("demo") / "data"
    return root, demo_data.build_demo_dataset(root, train_per_class=TRAIN, val_per_class=VAL,
                                              missing_audio=MISSING, seed=3)


def test_annotation_lists_every_video_with_its_class_subset_and_segment(dataset):
    _, paths = dataset
    annotation = json.loads(paths["annotation_path"].read_text())
    assert annotation["labels"] == demo_data.CLASSES
    database = annotation["database"]
    assert len(database) == len(demo_data.CLASSES) * (TRAIN + VAL)
    for name in demo_data.CLASSES:
        entries = [e for e in database.values() if e["annotations"]["label"] == name]
        assert sorted(e["subset"] for e in entries) == ["training"] * TRAIN + ["validation"] * VAL
        assert all(e["annotations"]["segment"] == [1, demo_data.FRAMES + 1] for e in entries)


def test_every_video_is_an_hdf5_of_frames_jpegs_at_the_demo_size(dataset):
    _, paths = dataset
    database = json.loads(paths["annotation_path"].read_text())["database"]
    for video_id, entry in database.items():
        with h5py.File(paths["video_path"] / entry["annotations"]["label"] / f"{video_id}.hdf5", "r") as f:
            frames = f["video"]
            assert len(frames) == demo_data.FRAMES
            first = bytes(frames[0])
    assert first[:2] == b"\xff\xd8"   # JPEG start-of-image marker
    from PIL import Image
    import io
    assert min(Image.open(io.BytesIO(first)).size) == demo_data.SIZE


def audio_features(paths, database) -> dict[str, list[np.ndarray]]:
    """class name -> the audio features on disk of that class's videos."""
    found: dict[str, list[np.ndarray]] = {name: [] for name in demo_data.CLASSES}
    for video_id, entry in database.items():
        file = paths["audio_path"] / entry["annotations"]["label"] / f"{video_id}.npy"
        if file.is_file():
            found[entry["annotations"]["label"]].append(np.load(file))
    return found


def test_audio_is_missing_for_about_the_declared_share(dataset):
    _, paths = dataset
    database = json.loads(paths["annotation_path"].read_text())["database"]
    n = len(database)
    present = sum(len(v) for v in audio_features(paths, database).values())
    expected, sigma = MISSING * n, (MISSING * (1 - MISSING) * n) ** 0.5
    assert abs((n - present) - expected) <= 3 * sigma
    assert 0 < present < n


def test_classes_0_and_1_share_a_sound_and_the_look_alike_pairs_do_not(dataset):
    _, paths = dataset
    database = json.loads(paths["annotation_path"].read_text())["database"]
    features = audio_features(paths, database)
    for arrays in features.values():
        assert all(a.shape == (512,) and a.dtype == np.float32 and (a >= 0).all() for a in arrays)
    means = [np.mean(features[name], axis=0) for name in demo_data.CLASSES]
    distance = {(i, j): float(np.linalg.norm(means[i] - means[j]))
                for i in range(6) for j in range(i + 1, 6)}
    shared = distance.pop((0, 1))
    # Means of ~7 noisy samples of one centre differ by noise only (about 7-9 here); those
    # of distinct centres by the centres' distance as well (about 18-20).
    assert shared < 0.6 * min(distance.values())


@needs_pyav
def test_each_class_shows_its_concept_tile_in_its_pair_colours(monkeypatch):
    monkeypatch.setattr(textures, "PIXEL_NOISE", 0.0)
    monkeypatch.setattr(textures, "COLOUR_JITTER", 0.0)
    tiles = textures.concept_tiles()
    rng = np.random.default_rng(0)
    for label, concept in enumerate(textures.STUDENT_CONCEPTS):
        frame = demo_data.render_video(label, rng)[0].astype(int)
        first, second = textures.PALETTE[concept % len(textures.PALETTE)]
        # The object covers the centre 8×8 window wherever it is (12×14 object in 16×20).
        window = frame[4:12, 6:14]
        is_first = (window == first).all(-1)
        assert (is_first | (window == second).all(-1)).all(), label
        # Cell (i, j) of the tile is the 2×2 block at (2i, 2j) of some cyclic shift.
        cells = {np.roll(is_first, (dy, dx), axis=(0, 1))[::2, ::2].tobytes()
                 for dy in range(8) for dx in range(8)}
        assert (tiles[concept] == 0).astype(bool).tobytes() in cells, label


def test_an_existing_dataset_is_reused_and_a_different_one_rebuilt(tmp_path):
    root = tmp_path / "data"
    paths = demo_data.build_demo_dataset(root, train_per_class=1, val_per_class=1)
    stamp = paths["annotation_path"].stat().st_mtime_ns
    assert demo_data.build_demo_dataset(root, train_per_class=1, val_per_class=1) == paths
    assert paths["annotation_path"].stat().st_mtime_ns == stamp
    demo_data.build_demo_dataset(root, train_per_class=2, val_per_class=1)
    database = json.loads(paths["annotation_path"].read_text())["database"]
    assert len(database) == len(demo_data.CLASSES) * 3
    assert len(list((root / "hdf5").rglob("*.hdf5"))) == 6 * 3


def test_format_table_gives_mean_and_sample_std_per_config():
    rows = {"baseline": [{"top1": 10.0, "R@1": 50.0, "mAP": 1.0}, {"top1": 20.0, "R@1": 50.0, "mAP": 4.0}],
            "ccl_a": [{"top1": 30.0, "R@1": 40.0, "mAP": 2.0}]}
    lines = format_table(rows).strip().splitlines()
    # std of (10, 20) with n-1: sqrt(50) = 7.07; of (1, 4): sqrt(4.5) = 2.12
    assert lines[2] == "| baseline | 15.0 ± 7.1 | 50.0 ± 0.0 | 2.5 ± 2.1 | 2 |"
    assert lines[3] == "| ccl_a | 30.0 | 40.0 | 2.0 | 1 |"


@needs_pyav
def test_demo_runs_end_to_end_at_a_tiny_scale(tmp_path, capsys):
    opt = parse_opts(["--demo", "--demo_epochs", "1", "--demo_seeds", "2", "--result_path", str(tmp_path)])
    build = functools.partial(demo_data.build_demo_dataset, train_per_class=2, val_per_class=1)
    teacher = functools.partial(demo_teacher_weights, settings=TeacherSettings(
        images_per_concept=2, held_out_per_concept=1, epochs=1, batch_size=32))
    assert run_demo(opt, train_and_evaluate, build_data=build, build_teacher=teacher,
                    configs=("baseline", "ccl_ai")) == 0
    root = tmp_path / "demo"
    summary = json.loads((root / "summary.json").read_text())
    weights = root / "teacher" / WEIGHTS_FILE
    assert weights.is_file() and 0 <= summary["teacher_held_out_top1"] <= 100
    database = json.loads((root / "data" / "demo.json").read_text())["database"]
    truth = {k: v["annotations"]["label"] for k, v in database.items() if v["subset"] == "validation"}
    for config in ("baseline", "ccl_ai"):
        runs = summary["runs"][config]
        assert len(runs) == 2
        for seed, run in enumerate(runs, start=1):
            # Each run's numbers, recomputed from its val.json and feature files.
            result = root / f"{config}_seed{seed}"
            predictions = json.loads((result / "val.json").read_text())["results"]
            right = sum(max(entries, key=lambda e: e["score"])["label"] == truth[video]
                        for video, entries in predictions.items())
            assert sorted(predictions) == sorted(truth)
            assert run["top1"] == pytest.approx(100 * right / len(truth), abs=1e-9)
            query, gallery = (np.load(result / f"features_{subset}.npz") for subset in ("validation", "training"))
            expected = brute_force_metrics(query["features"], query["labels"].tolist(), gallery["features"],
                                           gallery["labels"].tolist(), SAVED_KS)
            assert run["R@1"] == pytest.approx(expected["R@1"], abs=1e-9)
            assert run["mAP"] == pytest.approx(expected["mAP"], abs=1e-9)
        for metric in ("top1", "R@1", "mAP"):
            assert summary["mean"][config][metric] == pytest.approx(statistics.mean(r[metric] for r in runs))
        for seed in (1, 2):
            result = root / f"{config}_seed{seed}"
            for name in ("val.json", "retrieval.json", "features_training.npz", "features_validation.npz"):
                assert (result / name).is_file(), result / name
            assert (result / "report.md").is_file() == (seed == 2)
            assert not list(result.glob("*.pth"))
        options = json.loads((root / f"{config}_seed1" / "opts.json").read_text())
        assert options["use_audio"] == options["use_image"] == (config == "ccl_ai")
        assert options["image_teacher"] == "resnet18"
        assert options["image_teacher_weights"] == str(weights.absolute())
        assert options["image_size"] == options["sample_size"] == demo_data.SIZE
    # The comparison of every run, with the numbers the demo printed.
    comparison = (root / "report.md").read_text()
    assert (root / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for config, label in (("baseline", "baseline"), ("ccl_ai", "CCL (AI)")):
        for seed, run in enumerate(summary["runs"][config], start=1):
            assert f"| `{config}_seed{seed}` | {label} | {run['top1']:.2f} | {run['R@1']:.2f} |" in comparison
    out = capsys.readouterr().out
    assert "| baseline |" in out and "| ccl_ai |" in out
    assert str(root / "report.md") in out



@pytest.mark.parametrize("interruption, code", [(KeyboardInterrupt, 130), (Terminated, 143)])
def test_an_interrupted_demo_says_so_in_one_line(monkeypatch, capsys, tmp_path, interruption, code):
    def interrupted(*args, **kwargs):
        raise interruption

    monkeypatch.setattr(main, "run_demo", interrupted)
    assert main.main(["--demo", "--result_path", str(tmp_path)]) == code
    assert capsys.readouterr().err.splitlines() == [
        "interrupted: the demo did not finish; rerun `python main.py --demo` to run it again"]
