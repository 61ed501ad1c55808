"""Each run_*.sh script trains, infers, evaluates and reports end to end (tiny data, CPU)."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

TINY = ("--n_epochs 1 --n_classes 6 --sample_size 32 --sample_duration 8 --batch_size 6 "
        "--n_threads 0 --no_cuda --allow_untrained_teacher --no-tensorboard --multistep_milestones 5")


def ucf_layout(data, root):
    """DATA_ROOT/UCF101/{hdf5data, ucf51_01.json, audiocnn14embed512_features} as links."""
    ucf = root / "UCF101"
    ucf.mkdir(parents=True)
    (ucf / "hdf5data").symlink_to(data["video_path"])
    (ucf / "ucf51_01.json").symlink_to(data["annotation_path"])
    (ucf / "audiocnn14embed512_features").symlink_to(data["audio_path"])
    return root


def run_script(name, env_overrides):
    env = {**os.environ, "PYTHON": sys.executable, "GPUS": "", "OMP_NUM_THREADS": "1", **env_overrides}
    return subprocess.run(["bash", str(REPO / "scripts" / f"run_{name}.sh")], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", ["baseline", "ccl_audio", "ccl_image", "ccl_ai"])
def test_script_end_to_end(tiny_dataset, tmp_path, name):
    data_root = ucf_layout(tiny_dataset, tmp_path / "data")
    results = tmp_path / "results"
    done = run_script(name, {"DATA_ROOT": str(data_root), "RESULT_ROOT": str(results), "EXTRA": TINY})
    assert done.returncode == 0, done.stderr[-3000:]
    result = results / f"ucf51_{name}"
    options = json.loads((result / "opts.json").read_text())
    assert options["use_audio"] == ("audio" in name or name == "ccl_ai")
    assert options["use_image"] == ("image" in name or name == "ccl_ai")
    predictions = json.loads((result / "val.json").read_text())["results"]
    validation = [k for k, v in json.loads(tiny_dataset["annotation_path"].read_text())["database"].items()
                  if v["subset"] == "validation"]
    assert sorted(predictions) == sorted(validation)
    retrieval = json.loads((result / "retrieval.json").read_text())
    assert 0 <= retrieval["R@1"] <= 100 and retrieval["n_query"] == len(validation)
    assert (result / "report.md").stat().st_size > 0
    assert "top-1" in done.stdout.lower() or "accuracy" in done.stdout.lower()


def test_script_stops_early_when_data_is_missing(tmp_path):
    done = run_script("ccl_ai", {"DATA_ROOT": str(tmp_path / "nowhere")})
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error:") and "generate_video_hdf5.py" in done.stderr
