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
from tests.conftest import REPO, read_log, tiny_run_options
from tests.test_fault_injection import (FAST, FullDisk, assert_one_line_error, data, drop_checkpoints,  # noqa: F401
                                        launch, launched, no_model, one_thread, run_main, wait_for)
from training.checkpoint import atomic_save
from training.device import describe_device
from training.files import write_atomically
from training.result_folder import hold_result_folder


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


def test_temporary_checkpoint_names_are_per_process_and_leftovers_go(tmp_path, monkeypatch):
    written = []

    def open_and_record(path, *args, **kwargs):
        written.append(os.path.basename(path))
        return open(path, *args, **kwargs)
    monkeypatch.setattr(training.files, "open", open_and_record, raising=False)
    atomic_save({"epoch": 1}, tmp_path / "save_last.pth")
    assert written == [f"save_last.pth.{os.getpid()}.tmp"] and not list(tmp_path.glob("*.tmp"))
    for name in ("save_last.pth.tmp", "save_9.pth.4242.tmp", "notes.tmp"):
        (tmp_path / name).write_bytes(b"torn")
    with hold_result_folder(tmp_path):
        assert sorted(p.name for p in tmp_path.glob("*.tmp")) == ["notes.tmp"]


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


@pytest.mark.parametrize("checkpoint", ["save_last.pth", "save_100.pth", "save_model.pth"])
def test_a_fresh_run_into_a_folder_with_checkpoints_is_an_error_and_keeps_them(data, tmp_path, capsys, no_model,
                                                                               checkpoint):
    result = tmp_path / "result"
    result.mkdir()
    (result / checkpoint).write_bytes(b"an earlier run's checkpoint")
    (result / "train.log").write_text("epoch\tloss\n1\t2.0\n")
    (result / "opts.json").write_text('{"earlier": true}\n')
    code, lines = run_main(capsys, data, result)
    assert_one_line_error(code, lines, f"--result_path {result} holds the checkpoints of an earlier run "
                          f"({checkpoint})", "--auto_resume", "another --result_path")
    assert (result / checkpoint).read_bytes() == b"an earlier run's checkpoint"
    assert (result / "train.log").read_text() == "epoch\tloss\n1\t2.0\n"
    assert (result / "opts.json").read_text() == '{"earlier": true}\n'


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

def test_ctrl_c_says_what_was_saved_and_how_to_go_on(data, tmp_path, launched):
    result = tmp_path / "result"
    args = tiny_run_options(data, result, *FAST, "--n_epochs", "6", "--n_threads", "1")
    # Its own process group, as a terminal's: Ctrl-C reaches main.py and its loader worker.
    process = subprocess.Popen([sys.executable, str(REPO / "main.py"), *args], cwd=REPO, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    launched.append(process)
    wait_for(process, (result / "save_last.pth").exists, "the first checkpoint")
    os.killpg(process.pid, signal.SIGINT)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 130, stderr[-2000:]
    epoch = torch.load(result / "save_last.pth", weights_only=True)["epoch"]
    assert 1 <= epoch < 6
    assert stderr.splitlines()[-1] == (f"interrupted: the newest checkpoint is {result / 'save_last.pth'} "
                                       f"(epoch {epoch}); rerun the same command with --auto_resume to continue from it")
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr


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
    assert_one_line_error(code, lines, f"{result / 'save_last.pth'} was trained with other options: "
                          "--learning_rate 0.01 → 0.02, --sample_size 16 → 20;", "--result_path",
                          "--allow_changed_options", alone=False)
    assert "n_epochs" not in lines[-1] and "n_threads" not in lines[-1] and "val_freq" not in lines[-1]
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
