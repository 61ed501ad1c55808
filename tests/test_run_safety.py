"""A run you can trust, through main.py: one run per result folder, errors before anything is
built, Ctrl-C, the device line, and resuming only the training that was started."""
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import main

import training.files
import training.result_folder
import training.build
from errors import UserError
from opts import parse_opts
from tests.conftest import REPO, read_log, tiny_run_options
from tests.test_fault_injection import (FAST, FullDisk, assert_one_line_error, data, drop_checkpoints,  # noqa: F401
                                        launch, launched, no_model, one_thread, run_main, wait_for)
from training.checkpoint import atomic_save
from training.device import describe_device
from training.files import write_atomically
from training.result_folder import hold_result_folder
from training.run_options import NOT_TRAINING, TRAINING_OPTIONS, changed_training_options, recorded_options


# --- one run per result folder ---------------------------------------------------------------

def test_a_second_main_py_into_a_used_folder_stops_at_once(data, tmp_path, launched):
    result = tmp_path / "result"
    first = launch(data, result, tmp_path / "first.txt", "--n_epochs", "500")   # runs past the test
    launched.append(first)
    wait_for(first, (result / "save_last.pth").exists, "the first checkpoint")
    second = subprocess.run([sys.executable, str(REPO / "main.py"), *tiny_run_options(data, result, *FAST)],
                            cwd=REPO, capture_output=True, text=True, timeout=240,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert first.poll() is None, "the first run ended before the second started"
    assert second.returncode == 2, second.stderr
    assert second.stderr.splitlines() == [
        f"error: {result} is used by another run (pid {first.pid}): wait for it to end, or pass another --result_path"]
    first.kill()
    first.wait()
    epochs = [int(row["epoch"]) for row in read_log(result / "train.log")]
    assert epochs == list(range(1, len(epochs) + 1))      # the first run's rows alone


HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from training.result_folder import hold_result_folder
with hold_result_folder({folder!r}):
    print("held", flush=True)
    time.sleep(600)
"""


def test_the_lock_dies_with_its_process(tmp_path):
    folder = tmp_path / "result"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLDER.format(repo=str(REPO), folder=str(folder)))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"is used by another run \(pid {holder.pid}\)"):
            with hold_result_folder(folder):
                pass
    finally:
        holder.kill()
        holder.wait()
    with hold_result_folder(folder):        # SIGKILL left the lock file, not the lock
        assert (folder / "run.lock").read_text() == f"{os.getpid()}\n"


def test_temporary_checkpoint_names_are_per_process_and_leftovers_go(data, tmp_path, capsys, monkeypatch):
    written = []

    def open_and_record(path, *args, **kwargs):
        written.append(os.path.basename(path))
        return open(path, *args, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(training.files, "open", open_and_record, raising=False)
        atomic_save({"epoch": 1}, tmp_path / "save_last.pth")
    assert written == [f"save_last.pth.{os.getpid()}.tmp"] and not list(tmp_path.glob("*.tmp"))
    result = tmp_path / "result"
    result.mkdir()
    for name in ("save_last.pth.tmp", "save_9.pth.4242.tmp", "notes.tmp"):
        (result / name).write_bytes(b"torn")
    assert run_main(capsys, data, result)[0] == 0      # a training run removes them before its first save
    assert sorted(p.name for p in result.glob("*.tmp")) == ["notes.tmp"]


@pytest.mark.parametrize("room", [0, 100], ids=["nothing_fits", "a_part_fits"])
def test_a_result_file_on_a_full_disk_keeps_its_earlier_content(tmp_path, monkeypatch, room):
    path = tmp_path / "opts.json"
    path.write_text('{"earlier": true}\n')
    monkeypatch.setattr(FullDisk, "room", room)
    monkeypatch.setattr(training.files, "open", lambda name, mode: FullDisk(name, mode.replace("b", "")),
                        raising=False)
    with pytest.raises(OSError) as caught:
        write_atomically(path, b"x" * 1000)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert path.read_text() == '{"earlier": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opts.json"]


def test_a_full_disk_when_the_options_are_written_is_one_line_and_keeps_them(data, tmp_path, capsys,
                                                                           monkeypatch):
    result = tmp_path / "result"
    result.mkdir()
    (result / "opts.json").write_text('{"earlier": true}\n')
    monkeypatch.setattr(FullDisk, "room", 100)
    monkeypatch.setattr(training.files, "open", lambda name, mode: FullDisk(name, mode.replace("b", "")),
                        raising=False)
    code, lines = run_main(capsys, data, result)
    assert_one_line_error(code, lines, f"{result / 'opts.json'}: No space left on device", "free disk space",
                          code_wanted=1, alone=False)
    assert (result / "opts.json").read_text() == '{"earlier": true}\n'


def test_a_failed_file_operation_is_described_by_where_it_happened(tmp_path):
    result = tmp_path / "result"
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(result / "val.json"))
    assert main.describe_os_error(full, result) == (
        f"the run stopped: {result / 'val.json'}: No space left on device (free disk space, or check that "
        f"--result_path {result} is writable); the checkpoints on disk are complete")
    unnamed = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert f"a file in {result}: No space left on device (free disk space" in main.describe_os_error(unnamed, result)
    elsewhere = OSError(errno.EIO, os.strerror(errno.EIO), str(tmp_path / "data" / "a.hdf5"))
    assert main.describe_os_error(elsewhere, result) == (
        f"the run stopped: {tmp_path / 'data' / 'a.hdf5'}: Input/output error; the checkpoints on disk are complete")


# --- mistakes found before anything is built -------------------------------------------------

def test_a_result_path_that_is_a_file_is_a_one_line_error(data, tmp_path, capsys, no_model):
    result = tmp_path / "result"
    result.write_text("not a folder")
    code, lines = run_main(capsys, data, result)
    assert_one_line_error(code, lines, f"--result_path {result} is a file")


@pytest.mark.parametrize("checkpoint", ["save_last.pth", "save_100.pth"])
def test_a_fresh_run_into_a_folder_with_checkpoints_is_an_error_and_keeps_them(data, tmp_path, capsys, no_model,
                                                                               checkpoint):
    result = tmp_path / "result"
    result.mkdir()
    (result / checkpoint).write_bytes(b"an earlier run's checkpoint")
    (result / "train.log").write_text("epoch\tloss\n1\t2.0\n")
    (result / "opts.json").write_text('{"earlier": true}\n')
    code, lines = run_main(capsys, data, result)
    assert_one_line_error(code, lines, f"--result_path {result} holds the checkpoints of an earlier run "
                          f"({checkpoint})", "pass --auto_resume to continue that run", "another --result_path")
    assert (result / checkpoint).read_bytes() == b"an earlier run's checkpoint"
    assert (result / "train.log").read_text() == "epoch\tloss\n1\t2.0\n"
    assert (result / "opts.json").read_text() == '{"earlier": true}\n'


@pytest.mark.parametrize("auto_resume", [[], ["--auto_resume"]], ids=["fresh", "auto_resume"])
def test_a_folder_with_only_the_best_checkpoint_says_how_to_continue_from_it(data, tmp_path, capsys, no_model,
                                                                              auto_resume):
    # A run stopped in its first epoch between save_model.pth and save_last.pth: --auto_resume
    # finds nothing to continue, so the way on is --resume_path with that file.
    result = tmp_path / "result"
    result.mkdir()
    (result / "save_model.pth").write_bytes(b"an earlier run's checkpoint")
    code, lines = run_main(capsys, data, result, *auto_resume)
    assert_one_line_error(code, lines, f"--result_path {result} holds save_model.pth of an earlier run but no "
                          f"save_last.pth or save_<epoch>.pth", f"pass --resume_path {result / 'save_model.pth'} to "
                          f"continue from it, or another --result_path")
    assert "pass --auto_resume" not in lines[-1]
    assert (result / "save_model.pth").read_bytes() == b"an earlier run's checkpoint"


@pytest.mark.parametrize("evaluation", [[], ["--no_val", "--inference"]], ids=["validate", "inference"])
def test_an_evaluation_with_auto_resume_and_no_checkpoint_names_auto_resume(data, tmp_path, capsys, no_model,
                                                                            evaluation):
    result = tmp_path / "result"
    capsys.readouterr()
    code = main.main(tiny_run_options(data, result, "--no_train", "--auto_resume", *evaluation))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert_one_line_error(code, lines, f"--no_train --auto_resume evaluates the newest checkpoint in --result_path "
                          f"{result}, and it holds none", "check --result_path")
    assert "--resume_path" not in lines[-1]


def test_an_unreadable_checkpoint_found_by_auto_resume_names_auto_resume(data, tmp_path, capsys, no_model):
    result = tmp_path / "result"
    result.mkdir()
    (result / "save_last.pth").write_bytes(b"PK\x03\x04 a zip header and then nothing")
    code, lines = run_main(capsys, data, result, "--auto_resume")
    assert_one_line_error(code, lines, f"--auto_resume {result / 'save_last.pth'} is not a readable checkpoint",
                          alone=False)
    assert "--resume_path" not in lines[-1]


# --- a refused run leaves no trace -----------------------------------------------------------------

def test_a_refused_run_into_a_new_folder_leaves_no_trace(data, tmp_path, capsys):
    # Refused while the training is built (run.log and run.lock exist by then), into a folder
    # two levels of which the run creates.
    corrupt = tmp_path / "save_3.pth"
    corrupt.write_bytes(b"PK\x03\x04 a zip header and then nothing")
    result = tmp_path / "new" / "result"
    code, lines = run_main(capsys, data, result, "--resume_path", str(corrupt))
    assert_one_line_error(code, lines, "not a readable checkpoint", alone=False)
    assert any("device: cpu" in line for line in lines)       # it got as far as logging
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "save_3.pth"]


def test_a_refused_run_into_an_existing_folder_leaves_it_as_it_was(data, tmp_path, capsys):
    result = tmp_path / "result"
    result.mkdir()
    earlier = {"run.log": b"2026-01-01 INFO an earlier run\n", "run.lock": b"4242\n", "notes.txt": b"mine",
               "save_last.pth.4242.tmp": b"torn by a killed run", ".ccl_cache": None}
    for name, content in earlier.items():
        (result / name).mkdir() if content is None else (result / name).write_bytes(content)
    before = {p.name: (p.read_bytes() if p.is_file() else None) for p in result.iterdir()}
    code, lines = run_main(capsys, data, result, "--use_audio", "--audio_path", str(data["audio_path"].parent))
    assert_one_line_error(code, lines, "none of the", "has an audio feature", alone=False)
    assert {p.name: (p.read_bytes() if p.is_file() else None) for p in result.iterdir()} == before

    empty = tmp_path / "empty"
    empty.mkdir()
    code, _ = run_main(capsys, data, empty, "--use_audio", "--audio_path", str(data["audio_path"].parent))
    assert code == 2 and empty.is_dir() and not list(empty.iterdir())


@pytest.mark.parametrize("how", ["chmod", "refused_open"])
def test_an_unwritable_result_folder_is_a_one_line_error(data, tmp_path, capsys, no_model, monkeypatch, how):
    result = tmp_path / "result"
    result.mkdir()
    if how == "chmod":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        result.chmod(0o555)
    else:   # what os.open answers in a read-only folder, for users (root) whom chmod does not stop
        real_open = os.open

        def refuse(path, *args, **kwargs):
            if str(path).startswith(str(result)):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, *args, **kwargs)
        monkeypatch.setattr(training.result_folder.os, "open", refuse)
    try:
        code, lines = run_main(capsys, data, result)
    finally:
        result.chmod(0o755)
    assert_one_line_error(code, lines, f"--result_path {result} is not writable")


def test_distributed_outside_torchrun_is_a_one_line_error(data, tmp_path, capsys, no_model, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    code, lines = run_main(capsys, data, tmp_path / "result", "--distributed")
    assert_one_line_error(code, lines, "--distributed needs torchrun", "torchrun --nproc_per_node")


@pytest.mark.parametrize("environment, needles", [
    ({"RANK": "0", "WORLD_SIZE": "1"}, ["MASTER_ADDR, MASTER_PORT are not set", "torchrun --nproc_per_node"]),
    ({"RANK": "0", "WORLD_SIZE": "0", "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"},
     ["WORLD_SIZE=0 is not a number of processes"]),
    ({"RANK": "0", "WORLD_SIZE": "two", "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"},
     ["WORLD_SIZE=two is not a number of processes"]),
], ids=["no-master", "zero", "not-a-number"])
def test_a_torchrun_environment_that_is_incomplete_is_a_one_line_error(environment, needles, data, tmp_path, capsys,
                                                                        no_model, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    code, lines = run_main(capsys, data, tmp_path / "result", "--distributed")
    assert_one_line_error(code, lines, *needles)


def test_nesterov_without_momentum_is_a_one_line_error(data, tmp_path, capsys, no_model):
    code, lines = run_main(capsys, data, tmp_path / "result", "--nesterov", "--momentum", "0")
    assert_one_line_error(code, lines, "--nesterov needs momentum", "--momentum")
    assert not (tmp_path / "result").exists()


def test_a_batch_that_does_not_split_over_the_processes_is_a_one_line_error(data, tmp_path, capsys, no_model,
                                                                            monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    monkeypatch.setenv("MASTER_PORT", "29500")
    code, lines = run_main(capsys, data, tmp_path / "result", "--distributed", "--batch_size", "6")
    assert_one_line_error(code, lines, "--batch_size 6", "4 torchrun processes", "multiple of 4")


# --- Ctrl-C --------------------------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_says_what_was_saved_and_how_to_go_on(data, tmp_path, launched, signum):
    result = tmp_path / "result"
    args = tiny_run_options(data, result, *FAST, "--n_epochs", "6", "--n_threads", "1")
    # Its own process group, as a terminal's or a scheduler's job: the signal reaches main.py
    # and its loader worker.
    process = subprocess.Popen([sys.executable, str(REPO / "main.py"), *args], cwd=REPO, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    launched.append(process)
    wait_for(process, (result / "save_last.pth").exists, "the first checkpoint")
    os.killpg(process.pid, signum)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum], stderr[-2000:]
    epoch = torch.load(result / "save_last.pth", weights_only=True)["epoch"]
    assert 1 <= epoch < 6
    assert stderr.splitlines()[-1] == (f"interrupted: the newest checkpoint is {result / 'save_last.pth'} "
                                       f"(epoch {epoch}); rerun the same command with --auto_resume to continue from it")
    assert not any(word in stderr for word in ("Traceback", "KeyboardInterrupt", "Terminated", "DataLoader worker"))


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc/<pid>/maps")
def test_ctrl_c_while_the_libraries_load_ends_without_a_traceback(data, tmp_path, launched):
    args = tiny_run_options(data, tmp_path / "result", *FAST)
    process = subprocess.Popen([sys.executable, str(REPO / "main.py"), *args], cwd=REPO, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    launched.append(process)
    maps = f"/proc/{process.pid}/maps"
    # libtorch is mapped early in `import torch`, seconds before main.py's imports are done.
    wait_for(process, lambda: "libtorch" in open(maps).read(), "torch to start loading")
    os.killpg(process.pid, signal.SIGINT)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == -signal.SIGINT, stderr[-2000:]
    assert stderr == ""
    assert not (tmp_path / "result").exists()


# --- the device line -----------------------------------------------------------------------------

def test_the_device_line_says_when_gpus_were_asked_for_but_none_is_visible(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert describe_device(cpu, no_cuda=False, exact=False) == \
        "cpu (no CUDA device visible; GPUS/CUDA_VISIBLE_DEVICES=0,1 is ignored), fp32"
    assert describe_device(cpu, no_cuda=True, exact=False) == "cpu (--no_cuda), fp32"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert describe_device(cpu, no_cuda=False, exact=False) == "cpu (no CUDA device visible), fp32"


@pytest.mark.cuda
def test_the_device_line_names_the_gpu_and_the_precision():
    count = torch.cuda.device_count()
    line = describe_device(torch.device("cuda"), no_cuda=False, exact=False)
    gpus = f"{count} GPUs, DataParallel" if count > 1 else "1 GPU"
    assert line == f"cuda:0 ({torch.cuda.get_device_name(0)}), {gpus}, bf16 autocast"
    assert describe_device(torch.device("cuda"), no_cuda=False, exact=True).endswith(f"{gpus}, fp32")


# --- resume only what was started ----------------------------------------------------------------

def refuse_models(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the option error was reported")
    monkeypatch.setattr(training.build, "build_student", refuse)


def test_resuming_with_other_training_options_is_an_error_listing_each(data, tmp_path, capsys, monkeypatch):
    result = tmp_path / "result"
    assert run_main(capsys, data, result)[0] == 0
    options_before = (result / "opts.json").read_text()
    log_before = (result / "train.log").read_text()

    with monkeypatch.context() as patch:
        refuse_models(patch)
        code, lines = run_main(capsys, data, result, "--auto_resume", "--n_epochs", "2", "--sample_size", "20",
                               "--learning_rate", "0.02", "--n_threads", "1", "--val_freq", "2")
    assert_one_line_error(code, lines, f"--auto_resume {result / 'save_last.pth'} was trained with other options: "
                          "--learning_rate 0.01 → 0.02, --sample_size 16 → 20;", "--result_path",
                          "--allow_changed_options", alone=False)
    assert "n_epochs" not in lines[-1] and "n_threads" not in lines[-1] and "val_freq" not in lines[-1]
    assert "--resume_path" not in lines[-1]

    # Named by --resume_path, with every option that cannot change the training's numbers changed too.
    with monkeypatch.context() as patch:
        refuse_models(patch)
        code, lines = run_main(capsys, data, result, "--resume_path", str(result / "save_last.pth"), "--n_epochs", "2",
                               "--sample_size", "20", "--inference", "--retrieval", "--report", "--checkpoint", "5",
                               "--tensorboard", "--dataset", "kinetics", "--output_topk", "2", "--n_threads", "1")
    assert_one_line_error(code, lines, f"error: --resume_path {result / 'save_last.pth'} was trained with other "
                          "options: --sample_size 16 → 20; resume it", alone=False)
    assert (result / "opts.json").read_text() == options_before
    assert (result / "train.log").read_text() == log_before

    code, _ = run_main(capsys, data, result, "--auto_resume", "--n_epochs", "2", "--sample_size", "20",
                       "--allow_changed_options")
    assert code == 0
    recorded = json.loads((result / "opts.json").read_text())
    assert recorded["sample_size"] == 20
    assert recorded["option_changes"] == [{"from_epoch": 2, "option": "sample_size", "before": 16, "after": 20}]
    assert torch.load(result / "save_last.pth", weights_only=True)["option_changes"] == recorded["option_changes"]
    assert [row["epoch"] for row in read_log(result / "train.log")] == ["1", "2"]


# Each option's value in the saved run, and another one; the options of a teacher are compared
# with that teacher on.
OTHER_VALUES = {
    "video_path": "/elsewhere/hdf5", "audio_path": "/elsewhere/audio", "annotation_path": "/elsewhere/a.json",
    "n_classes": 7, "sample_size": 20, "sample_duration": 8, "sample_t_stride": 2, "train_crop_min_scale": 0.5,
    "train_crop_min_ratio": 0.5, "no_hflip": True, "mean_dataset": "activitynet", "no_mean_norm": True,
    "no_std_norm": True, "model": "r3d_18", "model_depth": 34, "pretrain_path": "/elsewhere/k.pth",
    "use_audio": False, "use_image": False, "loss_weight": 0.25, "image_size": 64, "image_teacher": "resnet18",
    "image_teacher_weights": "/elsewhere/r.pth", "image_teacher_norm": "imagenet", "learning_rate": 0.1,
    "momentum": 0.5, "dampening": 0.1, "weight_decay": 0.0, "nesterov": True, "multistep_milestones": [5],
    "batch_size": 4, "manual_seed": 2, "exact": True, "gpu_decode": True, "allow_untrained_teacher": False,
    "mean": [0.5, 0.5, 0.5], "std": [0.3, 0.3, 0.3], "value_scale": 2,
    # cannot change the numbers of the training
    "root_path": "/elsewhere", "result_path": "/elsewhere/r", "dataset": "kinetics", "file_type": "other",
    "strict_data": True, "n_threads": 7, "eval_reduced_decode": True, "n_val_samples": 5, "n_epochs": 9,
    "max_nonfinite_steps": 3, "max_bad_samples": 4, "no_train": True, "no_val": True, "val_freq": 3,
    "checkpoint": 5, "resume_path": "/elsewhere/r/save_3.pth", "auto_resume": True, "allow_changed_options": True,
    "inference": True, "inference_subset": "test", "inference_stride": 4, "inference_batch_size": 3,
    "output_topk": 2, "retrieval": True, "report": True, "tensorboard": False, "no_cuda": False,
    "distributed": True, "compile": True, "demo": True, "demo_seeds": 3, "demo_epochs": 2,
}
MATTERS = {"video_path", "audio_path", "annotation_path", "n_classes", "sample_size", "sample_duration",
           "sample_t_stride", "train_crop_min_scale", "train_crop_min_ratio", "no_hflip", "mean_dataset",
           "no_mean_norm", "no_std_norm", "value_scale", "model", "model_depth", "pretrain_path", "use_audio",
           "use_image", "loss_weight", "image_size", "image_teacher", "image_teacher_weights",
           "image_teacher_norm", "allow_untrained_teacher", "learning_rate", "momentum", "dampening",
           "weight_decay", "nesterov", "multistep_milestones", "batch_size", "manual_seed", "exact", "gpu_decode",
           "mean", "std"}


def saved_run_options() -> dict:
    """opts.json of a CCL (AI) run as main.py records it."""
    opt = parse_opts(["--annotation_path", "a.json", "--video_path", "v", "--audio_path", "au", "--use_audio",
                      "--use_image", "--no_cuda", "--allow_untrained_teacher"])
    return recorded_options({**vars(opt), "mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2], "resume_path": None})


def test_every_option_is_declared_as_changing_the_training_or_not():
    recorded = set(saved_run_options())
    assert TRAINING_OPTIONS | NOT_TRAINING == recorded and not TRAINING_OPTIONS & NOT_TRAINING
    assert TRAINING_OPTIONS == MATTERS and set(OTHER_VALUES) == recorded


@pytest.mark.parametrize("name", sorted(OTHER_VALUES))
def test_a_resume_lists_an_option_exactly_when_it_changes_the_training(name):
    saved = saved_run_options()
    assert OTHER_VALUES[name] != saved[name]
    changes = changed_training_options(saved, {**saved, name: OTHER_VALUES[name]})
    assert changes == ([(name, saved[name], OTHER_VALUES[name])] if name in MATTERS else [])


def test_an_image_teacher_option_counts_only_with_the_image_teacher():
    saved = {**saved_run_options(), "use_image": False}
    assert changed_training_options(saved, {**saved, "image_teacher": "resnet18", "image_size": 64}) == []
    assert changed_training_options(saved, {**saved, "use_image": True, "image_size": 64}) == [
        ("image_size", 112, 64), ("use_image", False, True)]


def test_resuming_a_finished_run_says_there_is_nothing_to_train(data, tmp_path, capsys):
    result = tmp_path / "result"
    assert run_main(capsys, data, result, "--n_epochs", "2")[0] == 0
    for n_epochs, level in (("2", "INFO"), ("1", "WARNING")):
        code, lines = run_main(capsys, data, result, "--n_epochs", n_epochs, "--auto_resume")
        assert code == 0
        said = [line for line in lines if "nothing to train" in line]
        assert len(said) == 1 and f" {level} nothing to train: the resumed checkpoint is at epoch 2, " \
            f"--n_epochs is {n_epochs}" in said[0], lines
    assert [row["epoch"] for row in read_log(result / "train.log")] == ["1", "2"]


def test_an_evaluation_run_records_its_options_beside_the_training_ones(data, tmp_path, capsys):
    result = tmp_path / "result"
    assert run_main(capsys, data, result)[0] == 0
    training_options = (result / "opts.json").read_text()
    code, _ = run_main(capsys, data, result, "--no_train", "--no_val", "--inference", "--resume_path", "latest",
                       "--inference_stride", "2")
    assert code == 0
    assert (result / "opts.json").read_text() == training_options
    evaluation = json.loads((result / "eval_opts.json").read_text())
    assert evaluation["no_train"] is True and evaluation["inference_stride"] == 2
    assert json.loads(training_options)["no_train"] is False
    assert "device: cpu (--no_cuda), fp32" in (result / "run.log").read_text()
