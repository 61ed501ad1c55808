"""Each run_*.sh script trains, infers, evaluates and reports end to end (tiny data, CPU)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tests.test_evaluation_retrieval import SAVED_KS, brute_force_metrics

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
    database = json.loads(tiny_dataset["annotation_path"].read_text())["database"]
    validation = {k: v["annotations"]["label"] for k, v in database.items() if v["subset"] == "validation"}
    assert sorted(predictions) == sorted(validation)
    # The printed top-1 is val.json's, counted here; retrieval.json is the loop oracle's
    # metrics of the saved features.
    right = sum(max(entries, key=lambda e: e["score"])["label"] == validation[video]
                for video, entries in predictions.items())
    assert f"top-1 accuracy: {right / len(validation)}" in done.stdout
    retrieval = json.loads((result / "retrieval.json").read_text())
    query, gallery = (np.load(result / f"features_{subset}.npz") for subset in ("validation", "training"))
    expected = brute_force_metrics(query["features"], query["labels"].tolist(), gallery["features"],
                                   gallery["labels"].tolist(), SAVED_KS)
    for metric, value in expected.items():
        assert retrieval[metric] == pytest.approx(value, abs=1e-9), metric
    assert retrieval["n_query"] == len(validation)
    assert (result / "report.md").stat().st_size > 0


def test_script_stops_early_when_data_is_missing(tmp_path):
    done = run_script("ccl_ai", {"DATA_ROOT": str(tmp_path / "nowhere")})
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error:") and "generate_video_hdf5.py" in done.stderr


def test_a_relative_data_root_that_is_missing_names_the_folder_it_is_relative_to(tmp_path):
    done = subprocess.run(["bash", str(REPO / "scripts" / "run_baseline.sh")], cwd=tmp_path,
                          env={**os.environ, "PYTHON": sys.executable, "GPUS": "", "DATA_ROOT": "mydata"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: mydata/UCF101/hdf5data does not exist (relative to the repository "
                                   f"root {REPO}, where the scripts run); convert the videos with "
                                   f"util_scripts/generate_video_hdf5.py; see dataset/README.md")


# --- what the scripts pass to main.py, with a stand-in interpreter ------------------------------

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$0|${CUDA_VISIBLE_DEVICES-unset}|$*" >> "$CALLS"
"""


def scripts_copy(tmp_path, venv: bool):
    """The scripts in a folder of their own (they cd to the folder above them), with a
    `.venv/bin/python` there when `venv`, and a `python` on PATH: both record their calls."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for script in (REPO / "scripts").glob("*.sh"):
        (root / "scripts" / script.name).write_text(script.read_text())
    fakes = [tmp_path / "bin" / "python"] + ([root / ".venv" / "bin" / "python"] if venv else [])
    for fake in fakes:
        fake.parent.mkdir(parents=True, exist_ok=True)
        fake.write_text(FAKE_PYTHON)
        fake.chmod(0o755)
    ucf = root / "dataset" / "UCF101"
    for folder in ("hdf5data", "audiocnn14embed512_features"):
        (ucf / folder).mkdir(parents=True)
    (ucf / "ucf51_01.json").write_text("{}")
    return root


def calls_of(tmp_path, name, venv=True, released_audio=True, **env):
    """[(interpreter, CUDA_VISIBLE_DEVICES, arguments)] of one script run."""
    root = scripts_copy(tmp_path, venv)
    if not released_audio:
        (root / "dataset" / "UCF101" / "audiocnn14embed512_features").rmdir()
    calls = tmp_path / "calls.txt"
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "GPUS", "N_THREADS", "PRECISION", "EXTRA")}
    done = subprocess.run(["bash", str(root / "scripts" / f"run_{name}.sh")], capture_output=True, text=True,
                          env={**base, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "CALLS": str(calls), **env},
                          timeout=60)
    if done.returncode != 0:
        return done
    return [tuple(line.split("|", 2)) for line in calls.read_text().splitlines()]


def option(arguments: str, name: str) -> str | None:
    words = arguments.split()
    return words[words.index(name) + 1] if name in words else None


def test_scripts_use_the_venv_interpreter_when_there_is_one(tmp_path):
    assert {c[0] for c in calls_of(tmp_path / "a", "baseline")} == {".venv/bin/python"}
    assert {c[0] for c in calls_of(tmp_path / "b", "ccl_ai", PYTHON="")} == {".venv/bin/python"}
    assert {c[0] for c in calls_of(tmp_path / "c", "baseline", venv=False)} == {str(tmp_path / "c" / "bin" / "python")}
    own = tmp_path / "c" / "bin" / "python"      # made by the call above
    assert {c[0] for c in calls_of(tmp_path / "d", "baseline", PYTHON=str(own))} == {str(own)}


@pytest.mark.parametrize("name, gpus", [("baseline", "0"), ("ccl_audio", "0,1"), ("ccl_image", "0,1"),
                                        ("ccl_ai", "0,1")])
def test_script_defaults_gpus_threads_and_precision(tmp_path, name, gpus):
    calls = calls_of(tmp_path, name)
    train, evaluate, accuracy = calls
    assert "main.py" in train[2] and "--auto_resume" in train[2]
    assert "--no_train" in evaluate[2] and "util_scripts/eval_accuracy.py" in accuracy[2]
    assert train[1] == evaluate[1] == gpus           # the original's: one GPU for the baseline
    threads = str(min(8, len(os.sched_getaffinity(0))))
    assert option(train[2], "--n_threads") == option(evaluate[2], "--n_threads") == threads
    assert "--exact" not in train[2] + evaluate[2]


def test_script_environment_overrides(tmp_path):
    train, evaluate, _ = calls_of(tmp_path / "a", "ccl_ai", GPUS="3", N_THREADS="2", PRECISION="fp32")
    assert train[1] == "3" and option(train[2], "--n_threads") == "2"
    assert "--exact" in train[2].split() and "--exact" in evaluate[2].split()
    train, _, _ = calls_of(tmp_path / "b", "baseline", GPUS="")
    assert train[1] == ""                             # empty: no GPU, the CPU


def test_script_rejects_an_unknown_precision_in_one_line(tmp_path):
    done = calls_of(tmp_path, "ccl_audio", PRECISION="fp16")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: PRECISION=fp16 is not bf16 or fp32 (fp32 is the original's precision)"]


def test_audio_features_given_in_extra_need_no_released_features(tmp_path):
    done = calls_of(tmp_path / "a", "ccl_audio", released_audio=False)
    assert done.returncode == 2 and "audiocnn14embed512_features does not exist" in done.stderr
    calls = calls_of(tmp_path / "b", "ccl_ai", released_audio=False, EXTRA="--audio_path features_Cnn14")
    # main.py's last --audio_path is EXTRA's: both runs read those features.
    assert [c[2].split()[-2:] for c in calls[:2]] == [["--audio_path", "features_Cnn14"]] * 2
