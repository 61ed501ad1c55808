"""Shared fixtures: a tiny dataset in the real on-disk formats, built once per session."""
import csv
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `@pytest.mark.cuda` need a GPU (`pytest -m cuda` runs only them);
    without a visible CUDA device they are skipped, all with one reason."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> dict[str, Path]:
    """The demo dataset at its smallest: encoded videos → HDF5, annotation JSON, audio .npy."""
    pytest.importorskip("av", reason="the tiny dataset's videos are encoded and converted with PyAV")
    from demo.data import build_demo_dataset
    return build_demo_dataset(tmp_path_factory.mktemp("tiny") / "data", train_per_class=3, val_per_class=1)


def tiny_run_options(data: dict[str, Path], result_path: Path, *extra: str) -> list[str]:
    """main.py options for a seconds-long CPU run on `tiny_dataset`."""
    return ["--video_path", str(data["video_path"]), "--audio_path", str(data["audio_path"]),
            "--annotation_path", str(data["annotation_path"]), "--result_path", str(result_path),
            "--n_classes", "6", "--sample_size", "32", "--sample_duration", "8", "--batch_size", "6",
            "--n_threads", "0", "--no_cuda", "--learning_rate", "0.01", "--no-tensorboard", *extra]


def read_log(path: Path) -> list[dict[str, str]]:
    """The rows of a tab-separated train.log / val.log."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def reproducible_log(path: Path) -> list[dict[str, str]]:
    """`read_log` without the wall-time columns, which no rerun reproduces."""
    from training.logs import TIMING_KEYS
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in read_log(path)]
