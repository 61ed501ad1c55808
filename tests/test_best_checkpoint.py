"""save_model.pth holds the epoch of the best validation clip accuracy (SPEC §4), the first
validation included, whatever its accuracy."""
import pytest
import torch

import main
from tests.conftest import tiny_run_options
from training.engine import Engine


@pytest.mark.parametrize("accuracies", [[0.0, 0.0, 0.0], [0.0, 0.5, 0.25], [0.5, 0.5, 0.75]])
def test_save_model_is_the_first_epoch_of_the_highest_accuracy(tiny_dataset, tmp_path, monkeypatch, accuracies):
    scripted = iter(accuracies)
    monkeypatch.setattr(Engine, "validate", lambda self, loader: {"loss": 1.0, "acc": next(scripted)})
    result = tmp_path / "run"
    assert main.main(tiny_run_options(tiny_dataset, result, "--n_epochs", str(len(accuracies)))) == 0
    best_epoch = 1 + accuracies.index(max(accuracies))
    saved = torch.load(result / "save_model.pth", map_location="cpu", weights_only=True)
    assert saved["epoch"] == best_epoch
    assert saved["best_acc"] == max(accuracies)
