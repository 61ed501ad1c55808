"""An interrupted run resumed from its checkpoint ends exactly where the straight run ends."""
import pytest
import torch

import main
from tests.conftest import tiny_run_options


def final_state(path):
    return torch.load(path / "save_last.pth", map_location="cpu", weights_only=False)


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
    log_a = (straight / "train.log").read_text().splitlines()
    log_b = (resumed / "train.log").read_text().splitlines()
    assert log_a == log_b and len(log_a) == 3


def test_auto_resume_continues_and_a_finished_run_does_nothing(tiny_dataset, tmp_path):
    result = tmp_path / "run"
    assert main.main(tiny_run_options(tiny_dataset, result, "--n_epochs", "1")) == 0
    assert main.main(tiny_run_options(tiny_dataset, result, "--n_epochs", "2", "--auto_resume")) == 0
    assert final_state(result)["epoch"] == 2
    assert len((result / "train.log").read_text().splitlines()) == 3
