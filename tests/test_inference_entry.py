"""Video inference and retrieval from an original-release checkpoint, through main.py."""
import json

import numpy as np
import pytest
import torch

import main
from models import build_student
from tests.conftest import tiny_run_options
from tests.test_evaluation_retrieval import SAVED_KS, brute_force_metrics


def test_original_format_checkpoint_infers_and_retrieves(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    student = build_student("r21d", 18, 6)
    # The original saved DataParallel state dicts: every key starts with `module.`.
    checkpoint = {"epoch": 300, "arch": "r21d-18",
                  "state_dict": {f"module.{k}": v for k, v in student.state_dict().items()},
                  "optimizer": {}, "scheduler": {}}
    torch.save(checkpoint, tmp_path / "save_300.pth")
    result = tmp_path / "eval"
    argv = tiny_run_options(tiny_dataset, result, "--no_train", "--no_val", "--inference", "--retrieval",
                            "--resume_path", str(tmp_path / "save_300.pth"), "--output_topk", "3")
    assert main.main(argv) == 0

    database = json.loads(tiny_dataset["annotation_path"].read_text())["database"]
    validation = sorted(k for k, v in database.items() if v["subset"] == "validation")
    results = json.loads((result / "val.json").read_text())["results"]
    assert sorted(results) == validation
    for predictions in results.values():
        scores = [p["score"] for p in predictions]
        assert len(predictions) == 3 and scores == sorted(scores, reverse=True)

    # retrieval.json holds the metrics of the saved features, by the loop oracle of SPEC §5
    query = np.load(result / "features_validation.npz")
    gallery = np.load(result / "features_training.npz")
    assert sorted(query["ids"]) == validation and len(gallery["ids"]) == len(database) - len(validation)
    expected = brute_force_metrics(query["features"], query["labels"].tolist(), gallery["features"],
                                   gallery["labels"].tolist(), SAVED_KS)
    saved = json.loads((result / "retrieval.json").read_text())
    assert {k for k in saved if k.startswith("R@")} == {k for k in expected if k.startswith("R@")}
    for name, value in expected.items():
        assert saved[name] == pytest.approx(value, abs=1e-9), name
    assert saved["n_query"] == len(validation)


def test_evaluating_without_a_checkpoint_is_a_user_error(tiny_dataset, tmp_path, capsys):
    argv = tiny_run_options(tiny_dataset, tmp_path / "eval", "--no_train", "--no_val", "--inference")
    assert main.main(argv) == 2
    assert capsys.readouterr().err.startswith("error: --no_train with --inference")
