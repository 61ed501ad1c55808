"""Fault injection through the real entry points (`main.main`, `python main.py`).

Bad options and data files give a one-line `error:` (exit 2) before any model is built;
unreadable samples are replaced and logged, too many of them stop the run; missing audio,
one-class batches and non-finite steps never poison the numbers; a killed or disk-full run
keeps a complete newest checkpoint that `--auto_resume` continues exactly.
Every case runs on a copy of the tiny generated dataset, corrupted here.
"""
import contextlib
import errno
import io
import itertools
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import main
import training.files
import training.build
from models import build_student
from tests.conftest import REPO, read_log, reproducible_log, tiny_run_options
from training.checkpoint import latest_checkpoint

# Smaller clips than tiny_run_options: three ~0.2 s steps per epoch on one CPU core.
FAST = ["--sample_size", "16", "--sample_duration", "4", "--no_val", "--n_epochs", "1"]
N_TRAIN = 18          # tiny_dataset: 6 classes x 3 training videos (batch 6: 3 steps per epoch)


@pytest.fixture
def data(tiny_dataset, tmp_path) -> dict[str, Path]:
    """A private copy of the tiny dataset, free to corrupt."""
    copy = {}
    for key, path in tiny_dataset.items():
        target = tmp_path / "data" / path.name
        if path.is_dir():
            shutil.copytree(path, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
        copy[key] = target
    return copy


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the run gets as far as building the student."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the input error was reported")
    monkeypatch.setattr(training.build, "build_student", refuse)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the machine is shared, and runs compared bit for bit across
    processes use the same count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def drop_checkpoints(tmp_path):
    """Each checkpoint of the real student is ~120 MB: remove them once a test is done."""
    yield
    for path in tmp_path.rglob("*.pth"):
        path.unlink()


@contextlib.contextmanager
def deadline(seconds: int):
    """Turn a hang (e.g. a stuck loader worker) into a test failure."""
    def expire(signum, frame):
        raise TimeoutError(f"the run was still going after {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_main(capsys, data, result: Path, *extra: str) -> tuple[int, list[str]]:
    """main.main on `data`; returns the exit code and the non-empty stderr lines."""
    capsys.readouterr()
    with deadline(180):
        code = main.main(tiny_run_options(data, result, *FAST, *extra))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, lines


def assert_one_line_error(code: int, lines: list[str], *needles: str, code_wanted: int = 2,
                          alone: bool = True) -> None:
    """stderr ends with one `error: ...` line holding every needle, and has no traceback.
    alone: nothing else was printed (errors found before the run starts logging)."""
    assert code == code_wanted, lines
    assert lines and lines[-1].startswith("error: "), lines
    assert not alone or len(lines) == 1, lines
    assert not any(line.startswith(("Traceback", "error: ")) for line in lines[:-1]), lines
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])


def training_entries(data) -> dict[str, dict]:
    database = json.loads(data["annotation_path"].read_text())["database"]
    return {k: v for k, v in database.items() if v["subset"] == "training"}


def video_file(data, video_id: str, entry: dict) -> Path:
    return data["video_path"] / entry["annotations"]["label"] / f"{video_id}.hdf5"


def audio_file(data, video_id: str, entry: dict) -> Path:
    return data["audio_path"] / entry["annotations"]["label"] / f"{video_id}.npy"


# --- option and annotation mistakes: one line, exit 2, no model -------------------------

def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", ["video_path", "annotation_path", "audio_path", "resume_path",
                                  "resume_latest", "no_labels", "invalid_json", "n_classes",
                                  "classes_without_audio"])
def test_option_mistakes_are_one_line_errors_before_any_model(case, data, tmp_path, capsys, no_model):
    nowhere = tmp_path / "nowhere"
    result = tmp_path / "result"
    no_labels = _write(tmp_path / "no_labels.json", json.dumps({"database": {}}))
    invalid = _write(tmp_path / "invalid.json", '{"labels": [')
    # A UCF101-like annotation: 4 more classes than there are audio class folders.
    annotation = json.loads(data["annotation_path"].read_text())
    annotation["labels"] += [f"Silent{k}" for k in range(4)]
    more_classes = _write(tmp_path / "ucf101_01.json", json.dumps(annotation))
    extra, needles = {
        "video_path": (["--video_path", str(nowhere)], ["--video_path", str(nowhere), "generate_video_hdf5.py"]),
        "annotation_path": (["--annotation_path", str(nowhere)],
                            ["--annotation_path", str(nowhere), "ucf101_json.py"]),
        "audio_path": (["--audio_path", str(nowhere), "--use_audio"], ["--audio_path", str(nowhere)]),
        "resume_path": (["--resume_path", str(nowhere)], ["--resume_path", str(nowhere), "'latest'"]),
        "resume_latest": (["--resume_path", "latest"], ["--resume_path latest", str(result)]),
        "no_labels": (["--annotation_path", str(no_labels)], [str(no_labels), "'labels' and 'database'"]),
        "invalid_json": (["--annotation_path", str(invalid)], [str(invalid), "not a valid JSON"]),
        "n_classes": (["--n_classes", "5"], ["--n_classes 5", str(data["annotation_path"]),
                                             "pass --n_classes 6"]),
        "classes_without_audio": (["--annotation_path", str(more_classes), "--use_audio"],
                                  ["--use_audio", f"4 of the 10 classes of {more_classes}", "Silent0",
                                   f"ucf101_json.py --audio_path {data['audio_path']}", "ucf51_01.json",
                                   "--n_classes 6"]),
    }[case]
    code, lines = run_main(capsys, data, result, *extra)
    assert_one_line_error(code, lines, *needles)
    assert not (result / "train.log").exists()


@pytest.mark.parametrize("option, kind, extra, expected", [
    ("--annotation_path", "folder", [], "a JSON annotation file"),
    ("--pretrain_path", "folder", [], "a checkpoint file"),
    ("--resume_path", "folder", [], "a save_<epoch>.pth file"),
    ("--image_teacher_weights", "folder", ["--use_image"], "a checkpoint file"),
    ("--video_path", "file", [], "the folder of the per-video HDF5 files"),
    ("--audio_path", "file", ["--use_audio"], "the folder of the audio features"),
])
def test_a_path_of_the_wrong_kind_is_named_as_such(option, kind, extra, expected, data, tmp_path, capsys, no_model):
    wrong = tmp_path / "wrong"
    if kind == "folder":
        wrong.mkdir()
    else:
        wrong.write_text("a file")
    result = tmp_path / "result"
    code, lines = run_main(capsys, data, result, *extra, option, str(wrong))
    other = "file" if kind == "folder" else "folder"
    assert_one_line_error(code, lines, f"{wrong} is a {kind}, not a {other}", option, expected)
    assert "does not exist" not in lines[-1]


@pytest.mark.parametrize("option, value, message", [
    ("--sample_size", "0", "must be 1 or more, got 0"),
    ("--sample_duration", "-4", "must be 1 or more, got -4"),
    ("--sample_t_stride", "0", "must be 1 or more, got 0"),
    ("--n_threads", "-1", "must be 0 or more, got -1"),
    ("--val_freq", "0", "must be 1 or more, got 0"),
    ("--checkpoint", "0", "must be 1 or more, got 0"),
    ("--n_val_samples", "0", "must be 1 or more, got 0"),
    ("--inference_stride", "0", "must be 1 or more, got 0"),
    ("--output_topk", "0", "must be 1 or more, got 0"),
    ("--image_size", "0", "must be 1 or more, got 0"),
    ("--batch_size", "0", "must be 1 or more, got 0"),
    ("--learning_rate", "-1", "must be 0 or more, got -1.0"),
    ("--learning_rate", "inf", "must be a finite number, got inf"),
    ("--weight_decay", "nan", "must be a finite number, got nan"),
    ("--loss_weight", "-0.5", "must be 0 or more, got -0.5"),
    ("--train_crop_min_ratio", "0", "must be in (0, 1], got 0.0"),
    ("--train_crop_min_scale", "1.5", "must be in (0, 1], got 1.5"),
    ("--model", "resnet50", "invalid choice: 'resnet50' (choose from 'r21d', 'r21d_std', 'r3d_18', 'mc3_18', "
                            "'r2plus1d_18')"),
    ("--sample_size", "big", "invalid int value: 'big'"),
])
def test_nonsense_option_values_are_one_line_errors(option, value, message, data, tmp_path, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main.main(tiny_run_options(data, tmp_path / "result", option, value))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 2
    assert lines == [f"error: argument {option}: {message} (see main.py --help)"]
    assert not (tmp_path / "result").exists()


def test_corrupt_resume_checkpoint_is_a_one_line_error(data, tmp_path, capsys):
    checkpoint = tmp_path / "save_3.pth"
    checkpoint.write_bytes(b"PK\x03\x04 a zip header and then nothing")
    code, lines = run_main(capsys, data, tmp_path / "result", "--resume_path", str(checkpoint))
    assert_one_line_error(code, lines, "--resume_path", str(checkpoint), "not a readable checkpoint", alone=False)


# --- missing and broken data files ---------------------------------------------------------

def test_missing_videos_are_left_out_with_one_warning(data, tmp_path, capsys):
    entries = training_entries(data)
    gone = sorted(entries)[:2]
    for video_id in gone:
        video_file(data, video_id, entries[video_id]).unlink()
    with pytest.warns(UserWarning) as caught:
        code, _ = run_main(capsys, data, tmp_path / "result")
    assert code == 0
    messages = [str(w.message) for w in caught if "HDF5" in str(w.message)]
    assert len(messages) == 1
    assert f"2 of {N_TRAIN} 'training' samples" in messages[0]
    assert all(video_id in messages[0] for video_id in gone)
    # Without --use_audio every sample counts as "without audio": the epoch saw the 16 left.
    assert read_log(tmp_path / "result" / "train.log")[0]["samples_without_audio"] == str(N_TRAIN - 2)


def test_strict_data_turns_missing_videos_into_a_one_line_error(data, tmp_path, capsys, no_model):
    entries = training_entries(data)
    gone = sorted(entries)[:3]
    for video_id in gone:
        video_file(data, video_id, entries[video_id]).unlink()
    code, lines = run_main(capsys, data, tmp_path / "result", "--strict_data")
    assert_one_line_error(code, lines, f"3 of {N_TRAIN} 'training' samples", *gone, "--strict_data", alone=False)


@pytest.mark.parametrize("array, reason", [
    (np.zeros((3, 128), np.float32), "shape (3, 128)"),
    (np.zeros(512, np.float64), "dtype float64"),
    (np.full(512, np.inf, np.float32), "NaN or inf"),
], ids=["shape", "dtype", "inf"])
def test_broken_audio_feature_is_a_one_line_error_naming_the_file(data, tmp_path, capsys, no_model,
                                                                  array, reason):
    entries = training_entries(data)
    broken = next(audio_file(data, k, v) for k, v in sorted(entries.items())
                  if audio_file(data, k, v).is_file())
    np.save(broken, array)
    code, lines = run_main(capsys, data, tmp_path / "result", "--use_audio")
    assert_one_line_error(code, lines, str(broken), reason, "extract_audio_features.py", alone=False)
    assert not (tmp_path / "result" / "opts.json").exists()   # no options of a training that never ran


def corrupt_two_videos(data) -> tuple[Path, Path]:
    """Garbage in place of frame 7 of one training video; another cut to half its size."""
    entries = sorted(training_entries(data).items())
    garbled, truncated = video_file(data, *entries[0]), video_file(data, *entries[7])
    with h5py.File(garbled, "r+") as f:
        size = len(f["video"][6])
        f["video"][6] = np.frombuffer(np.random.default_rng(0).bytes(size), np.uint8)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    return garbled, truncated


# Clips of frames 1, 7, 13, 19 (stride 6 over 24 frames, 4 frames): every read of the
# garbled video meets frame 7.
EVERY_SIXTH = ["--sample_t_stride", "6"]


@pytest.mark.parametrize("n_threads", ["0", "1"])
def test_unreadable_samples_are_replaced_and_logged(data, tmp_path, capsys, n_threads):
    garbled, truncated = corrupt_two_videos(data)
    result = tmp_path / "result"
    code, _ = run_main(capsys, data, result, *EVERY_SIXTH, "--n_threads", n_threads, "--max_bad_samples", "50")
    assert code == 0
    incidents = [line.split("unreadable sample replaced: ", 1)[1]
                 for line in (result / "run.log").read_text().splitlines() if "unreadable sample replaced" in line]
    assert any(i.startswith(f"{garbled}: cannot decode JPEG") and i.endswith("(frame 7)") for i in incidents)
    assert any(i.startswith(f"{truncated}: cannot read HDF5") for i in incidents)
    assert all(i.startswith((f"{garbled}: ", f"{truncated}: ")) for i in incidents)
    row = read_log(result / "train.log")[0]
    assert int(row["bad_samples"]) == len(incidents) >= 2
    assert math.isfinite(float(row["loss"]))


def test_too_many_unreadable_samples_stop_the_run_naming_the_files(data, tmp_path, capsys):
    garbled, truncated = corrupt_two_videos(data)
    result = tmp_path / "result"
    code, lines = run_main(capsys, data, result, *EVERY_SIXTH, "--n_threads", "1", "--max_bad_samples", "1")
    assert code == 1
    assert lines[-1].startswith("error: training stopped: ") and "--max_bad_samples 1" in lines[-1]
    named = [str(f) for f in (garbled, truncated) if str(f) in lines[-1]]
    files = lines[-1].split("files: ", 1)[1].split(" (first: ", 1)[0].split(", ")
    assert named and sorted(files) == sorted(named)
    assert not list(result.glob("save_*.pth"))


@pytest.mark.parametrize("n_threads", ["0", "1"])
def test_a_dataset_with_nothing_readable_stops_the_run_in_one_line(data, tmp_path, capsys, n_threads):
    for path in data["video_path"].rglob("*.hdf5"):
        path.write_bytes(b"not an HDF5 file")
    code, lines = run_main(capsys, data, tmp_path / "result", "--n_threads", n_threads)
    assert_one_line_error(code, lines, "unreadable samples in a row", "cannot read HDF5", str(data["video_path"]),
                          code_wanted=1, alone=False)
    assert lines[-1].startswith("error: 11 unreadable samples in a row, the last: ")


@pytest.mark.parametrize("n_threads", ["0", "1"])
def test_nothing_readable_at_inference_stops_in_one_line(data, tmp_path, capsys, n_threads):
    # Training data is fine; every validation video is broken, so inference has nothing.
    database = json.loads(data["annotation_path"].read_text())["database"]
    for video_id, entry in database.items():
        if entry["subset"] == "validation":
            video_file(data, video_id, entry).write_bytes(b"not an HDF5 file")
    code, lines = run_main(capsys, data, tmp_path / "result", "--n_threads", n_threads,
                           "--no_val", "--inference")
    assert_one_line_error(code, lines, "unreadable video at inference", "cannot read HDF5", str(data["video_path"]),
                          code_wanted=1, alone=False)
    assert (tmp_path / "result" / "save_last.pth").is_file()  # training itself completed


def validation_videos(data) -> list[Path]:
    database = json.loads(data["annotation_path"].read_text())["database"]
    return sorted(video_file(data, video_id, entry) for video_id, entry in database.items()
                  if entry["subset"] == "validation")


@pytest.mark.parametrize("n_threads", ["0", "1"])
def test_one_unreadable_video_at_inference_is_a_one_line_error_naming_it(data, tmp_path, capsys, n_threads):
    # Replacing its windows would give it no prediction, or another video's windows.
    broken = validation_videos(data)[1]
    broken.write_bytes(b"not an HDF5 file")
    code, lines = run_main(capsys, data, tmp_path / "result", "--n_threads", n_threads, "--inference")
    assert_one_line_error(code, lines, f"unreadable video at inference: {broken}: cannot read HDF5",
                          "--no_train --inference --resume_path latest", code_wanted=1, alone=False)
    assert not (tmp_path / "result" / "val.json").exists()
    assert (tmp_path / "result" / "save_last.pth").is_file()


def test_unreadable_validation_clips_are_replaced_and_logged(data, tmp_path, capsys):
    broken = validation_videos(data)[0]
    broken.write_bytes(b"not an HDF5 file")
    result = tmp_path / "result"
    with deadline(180):
        code = main.main(tiny_run_options(data, result, "--sample_size", "16", "--sample_duration", "4",
                                          "--n_epochs", "1", "--n_val_samples", "1"))
    assert code == 0
    incidents = [line.split("unreadable sample replaced: ", 1)[1]
                 for line in (result / "run.log").read_text().splitlines() if "unreadable sample replaced" in line]
    assert incidents and all(i.startswith(f"{broken}: cannot read HDF5") for i in incidents)


# --- audio gaps and degenerate batches --------------------------------------------------------

def test_missing_audio_is_counted_and_the_run_completes(data, tmp_path, capsys):
    entries = training_entries(data)
    for video_id, entry in sorted(entries.items())[::4]:
        audio_file(data, video_id, entry).unlink(missing_ok=True)
    without = sum(not audio_file(data, k, v).is_file() for k, v in entries.items())
    result = tmp_path / "result"
    code, _ = run_main(capsys, data, result, "--use_audio")
    assert code == 0
    row = read_log(result / "train.log")[0]
    assert int(row["samples_without_audio"]) == without >= 5
    assert all(math.isfinite(float(row[k])) for k in ("loss", "audio/contrast", "audio/divergence"))


def test_no_training_video_with_audio_is_a_one_line_error(data, tmp_path, capsys, no_model, monkeypatch):
    # E.g. --audio_path one level too high: CCL (A) would silently train as the baseline.
    # Found before any loader is built (a loader's own warnings would come first).
    monkeypatch.setattr("training.build.build_loader", lambda *a, **k: pytest.fail("a loader was built"))
    code, lines = run_main(capsys, data, tmp_path / "result", "--use_audio", "--audio_path", str(data["audio_path"].parent))
    assert_one_line_error(code, lines, f"none of the {N_TRAIN} training videos has an audio feature",
                          f"--audio_path {data['audio_path'].parent}", alone=False)
    assert not (tmp_path / "result" / "opts.json").exists()   # no options of a training that never ran


@pytest.mark.parametrize("removed, warned", [(1, False), (4, True)], ids=["6%", "22%"])
def test_many_videos_without_audio_warn_with_the_count_and_the_folder(data, tmp_path, capsys, removed, warned):
    entries = sorted(training_entries(data).items())
    files = [audio_file(data, video_id, entry) for video_id, entry in entries]
    present = next(f for f in files if f.is_file())
    for file in files[removed:]:          # the demo data lacks a few on purpose: fill them in
        if not file.is_file():
            shutil.copy(present, file)
    for file in files[:removed]:
        file.unlink(missing_ok=True)
    result = tmp_path / "result"
    code, _ = run_main(capsys, data, result, "--use_audio")
    assert code == 0
    line = next(line for line in (result / "run.log").read_text().splitlines()
                if "training videos (" in line)
    assert f"{removed} of {N_TRAIN} training videos" in line and str(data["audio_path"]) in line
    assert (" WARNING " in line) == warned


def test_a_training_set_of_one_class_gives_finite_losses(data, tmp_path, capsys):
    annotation = json.loads(data["annotation_path"].read_text())
    first = annotation["labels"][0]
    annotation["database"] = {k: v for k, v in annotation["database"].items()
                              if v["subset"] != "training" or v["annotations"]["label"] == first}
    data["annotation_path"].write_text(json.dumps(annotation))
    result = tmp_path / "result"
    code, _ = run_main(capsys, data, result, "--use_audio", "--use_image", "--allow_untrained_teacher")
    assert code == 0
    row = read_log(result / "train.log")[0]
    numbers = {k: float(v) for k, v in row.items() if k not in ("epoch",)}
    assert numbers["skipped_steps"] == 0 and numbers["image/contrast"] > 0
    assert all(math.isfinite(v) for v in numbers.values()), numbers


# --- non-finite steps ----------------------------------------------------------------------

def poison_forward(monkeypatch, poisoned) -> None:
    """Student forward calls n (1-based; one per training step under --no_val) for which
    `poisoned(n)` holds return NaN logits: the loss and every student gradient are NaN."""
    real_build = training.build.build_student

    def build(*args, **kwargs):
        student = real_build(*args, **kwargs)
        forward, calls = student.forward, itertools.count(1)

        def nan_forward(clip):
            logits, features = forward(clip)
            return (logits * float("nan"), features) if poisoned(next(calls)) else (logits, features)
        student.forward = nan_forward
        return student
    monkeypatch.setattr(training.build, "build_student", build)


def test_non_finite_steps_are_skipped_and_counted(data, tmp_path, capsys, monkeypatch):
    poison_forward(monkeypatch, lambda n: n > 3)          # every step of epoch 2
    result = tmp_path / "result"
    code, _ = run_main(capsys, data, result, "--n_epochs", "2", "--checkpoint", "1")
    assert code == 0
    rows = read_log(result / "train.log")
    assert [r["skipped_steps"] for r in rows] == ["0", "3"]
    assert math.isfinite(float(rows[0]["loss"]))
    # A skipped step changes no parameter and no momentum: epoch 2 left them as epoch 1 did.
    after_1 = torch.load(result / "save_1.pth", weights_only=True)
    after_2 = torch.load(result / "save_last.pth", weights_only=True)
    assert after_2["epoch"] == 2
    parameters = dict(build_student("r21d", 18, 6).named_parameters())
    for name in parameters:
        assert torch.equal(after_1["state_dict"][name], after_2["state_dict"][name]), name
    for key, value in after_1["optimizer"]["state"].items():
        assert torch.equal(value["momentum_buffer"], after_2["optimizer"]["state"][key]["momentum_buffer"])


def test_consecutive_non_finite_steps_stop_the_run_keeping_the_last_good_checkpoint(
        data, tmp_path, capsys, monkeypatch):
    poison_forward(monkeypatch, lambda n: n > 4)          # epoch 2: step 1 fine, then NaN
    result = tmp_path / "result"
    code, lines = run_main(capsys, data, result, "--n_epochs", "3", "--max_nonfinite_steps", "2")
    assert code == 1
    assert lines[-1].startswith("error: training stopped: 2 consecutive non-finite steps in epoch 2")
    assert "--max_nonfinite_steps 2" in lines[-1]
    assert torch.load(result / "save_last.pth", weights_only=True)["epoch"] == 1
    assert [r["epoch"] for r in read_log(result / "train.log")] == ["1"]


# --- checkpoints under kill and disk full ---------------------------------------------------

class FullDisk(io.FileIO):
    """A file on a disk that fills up after `room` bytes: the write that crosses it stores
    what fits and raises ENOSPC, as a real full disk does."""
    room = 4096

    def write(self, data) -> int:
        stored = self.tell()
        if stored + len(data) > self.room:
            super().write(bytes(data)[:max(0, self.room - stored)])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(data, tmp_path, capsys, monkeypatch):
    calls = itertools.count(1)

    def open_on_full_disk(path, mode="r", *args, **kwargs):
        # The second checkpoint written: save_last.pth of epoch 2.
        if Path(path).name.startswith("save_") and next(calls) == 2:
            return FullDisk(path, mode.replace("b", ""))
        return open(path, mode, *args, **kwargs)
    monkeypatch.setattr(training.files, "open", open_on_full_disk, raising=False)
    result = tmp_path / "result"
    code, lines = run_main(capsys, data, result, "--n_epochs", "2")
    assert code == 1
    assert lines[-1].startswith(f"error: training stopped: could not write checkpoint {result / 'save_last.pth'}: "
                                f"No space left on device")
    assert f"the newest checkpoint, {result / 'save_last.pth'} (epoch 1), is intact" in lines[-1]
    assert not any(line.startswith("Traceback") for line in lines)
    assert torch.load(result / "save_last.pth", weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in result.glob("save*")) == ["save_last.pth"]


def test_disk_full_at_the_first_checkpoint_says_that_there_is_none(data, tmp_path, capsys, monkeypatch):
    def open_on_full_disk(path, mode="r", *args, **kwargs):
        if Path(path).name.startswith("save_"):
            return FullDisk(path, mode.replace("b", ""))
        return open(path, mode, *args, **kwargs)
    monkeypatch.setattr(training.files, "open", open_on_full_disk, raising=False)
    result = tmp_path / "result"
    code, lines = run_main(capsys, data, result)
    assert_one_line_error(code, lines, f"could not write checkpoint {result / 'save_last.pth'}: No space left",
                          "no save_last.pth or save_<epoch>.pth to resume from yet", code_wanted=1, alone=False)
    assert "intact" not in lines[-1]
    assert not list(result.glob("save*"))


def launch(data, result: Path, log: Path, *extra: str) -> subprocess.Popen:
    """`python main.py`: 4 epochs of CCL (A), `save_<epoch>.pth` every 2 epochs."""
    args = tiny_run_options(data, result, *FAST, "--n_epochs", "4", "--checkpoint", "2", "--use_audio", *extra)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "ab") as stderr:
        return subprocess.Popen([sys.executable, str(REPO / "main.py"), *args], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr)


def wait_for(process: subprocess.Popen, ready, what: str) -> None:
    start = time.monotonic()
    while not ready():
        assert process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() - start < 240, f"no {what} after 240 s"
        time.sleep(0.002)


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run had finished before the kill"


def assert_checkpoints_complete(result: Path) -> None:
    """Every save_*.pth loads; a torn `.tmp` left by the kill is never taken for one."""
    files = sorted(result.glob("save_*.pth"))
    assert files
    for path in files:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert 1 <= checkpoint["epoch"] <= 4, path
    assert latest_checkpoint(result).suffix == ".pth"


@pytest.fixture
def launched():
    """Processes started by a test; any still running at its end (a failure) are killed."""
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_killed_runs_resume_to_the_uninterrupted_result(data, tmp_path, launched):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    log = tmp_path / "stderr.txt"
    reference = launch(data, straight, log)          # runs alongside the interrupted ones
    launched.append(reference)
    last = killed / "save_last.pth"

    # Kill 1, in the middle of a checkpoint file write (the first save_last.pth is complete).
    process = launch(data, killed, log)
    launched.append(process)
    wait_for(process, last.exists, "the first checkpoint")
    wait_for(process, lambda: any(killed.glob("*.tmp")), "a second checkpoint write")
    kill(process)
    assert_checkpoints_complete(killed)
    assert (killed / "run.lock").read_text() == f"{process.pid}\n"   # the file stays, its lock is gone
    assert torch.load(last, weights_only=True)["epoch"] <= 2
    # As a kill inside torch.save leaves them (whether or not this one did): ignored, overwritten.
    (killed / "save_last.pth.tmp").write_bytes(b"PK\x03\x04 torn")
    (killed / "save_9.pth.tmp").write_bytes(b"PK\x03\x04 torn")

    # Kill 2, at a random moment of the epoch after the resumed run's first checkpoint.
    process = launch(data, killed, log, "--auto_resume")
    launched.append(process)
    saved = last.stat().st_mtime_ns
    wait_for(process, lambda: last.stat().st_mtime_ns != saved, "a checkpoint after the resume")
    delay = random.uniform(0, 0.5)       # reported by the assertions below
    time.sleep(delay)
    kill(process)
    assert_checkpoints_complete(killed)

    process = launch(data, killed, log, "--auto_resume")
    launched.append(process)
    assert process.wait(timeout=240) == 0, (delay, log.read_text()[-2000:])
    assert reference.wait(timeout=240) == 0, log.read_text()[-2000:]
    a = torch.load(straight / "save_last.pth", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["epoch"] == b["epoch"] == 4
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), (key, delay)
    for key in a["heads"]["audio"]:
        assert torch.equal(a["heads"]["audio"][key], b["heads"]["audio"][key]), (key, delay)
    for key, value in a["optimizer"]["state"].items():
        assert torch.equal(value["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"]), delay
    assert reproducible_log(straight / "train.log") == reproducible_log(killed / "train.log"), delay
    assert not (killed / "save_last.pth.tmp").exists()
