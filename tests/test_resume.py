"""An interrupted run resumed from its checkpoint ends exactly where the straight run ends."""
import types

import pytest
import torch

import main
import training.engine
from tests.conftest import read_log, reproducible_log, tiny_run_options
from training.engine import Timed


def final_state(path):
    return torch.load(path / "save_last.pth", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("config", [[], ["--use_audio"]], ids=["baseline", "ccl_audio"])
def test_two_epochs_equal_one_plus_resume_plus_one(tiny_dataset, tmp_path, config):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main.main(tiny_run_options(tiny_dataset, straight, "--n_epochs", "2", *config)) == 0
    assert main.main(tiny_run_options(tiny_dataset, resumed, "--n_epochs", "1", *config)) == 0
    assert main.main(tiny_run_options(tiny_dataset, resumed, "--n_epochs", "2", "--resume_path", "latest",
                                      *config)) == 0
    a, b = final_state(straight), final_state(resumed)
    assert a["epoch"] == b["epoch"] == 2
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for name in a["heads"]:
        for key in a["heads"][name]:
            assert torch.equal(a["heads"][name][key], b["heads"][name][key]), (name, key)
    for key, value in a["optimizer"]["state"].items():
        assert torch.equal(value["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"])
    log_a = reproducible_log(straight / "train.log")
    assert log_a == reproducible_log(resumed / "train.log") and len(log_a) == 2
    for row in read_log(straight / "train.log"):
        assert float(row["clips_per_s"]) > 0 and 0 <= float(row["data_wait"]) <= 1


def test_auto_resume_continues_and_a_finished_run_does_nothing(tiny_dataset, tmp_path):
    result = tmp_path / "run"
    assert main.main(tiny_run_options(tiny_dataset, result, "--n_epochs", "1")) == 0
    assert main.main(tiny_run_options(tiny_dataset, result, "--n_epochs", "2", "--auto_resume")) == 0
    assert final_state(result)["epoch"] == 2
    assert len((result / "train.log").read_text().splitlines()) == 3


def test_timed_counts_the_wait_for_items_not_the_work_on_them(monkeypatch):
    # A clock that moves only when the test says: the producer takes 0.25, 0 and 0.5 s per
    # item, the consumer 1 s per item, so the wait is 0.75 s exactly (binary fractions),
    # whatever else the machine is doing.
    now = [0.0]
    monkeypatch.setattr(training.engine, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    def slow_items():
        for delay in (0.25, 0.0, 0.5):
            now[0] += delay
            yield delay

    items = Timed(slow_items())
    seen = []
    for item in items:
        now[0] += 1.0   # the consumer's work: not waiting
        seen.append(item)
    assert seen == [0.25, 0.0, 0.5]
    assert items.waited == 0.75
