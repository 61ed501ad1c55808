"""Checkpoints load without running code: ours, the original release's and official PANNs
files load; a pickle that would run code is refused in one line, through every entry that
reads a checkpoint, and its payload never runs."""
import io
import os
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from models import CompositionClassifier, build_student
from models.checkpoint_file import CheckpointFileError, read_checkpoint_file
from tests.conftest import read_log
from tests.test_fault_injection import assert_one_line_error, data, drop_checkpoints, one_thread, run_main  # noqa: F401
from training.checkpoint import load_checkpoint, load_student_weights, rng_state, set_rng_state
from training.config import OptimConfig
from training.optim import make_optimizers, make_scheduler
from training.state import TrainingState, restore
from training.teachers import build_teachers, heads


# --- fixtures: the files other programs write ----------------------------------------------

def write_original_release_run(folder: Path, epoch: int, teachers=("audio",), n_classes: int = 6,
                               learning_rate: float = 0.01, milestones=(2,), module_prefix: bool = False):
    """What the original release's main.py leaves after `epoch` epochs (yanbeic/CCL, main.py).

    Its `save_checkpoint` writes `{'epoch', 'arch', 'state_dict', 'optimizer', 'scheduler'}`
    with torch.save of plain dicts and tensors: the state dict of the unwrapped model (it
    takes `.module` of DataParallel; `module_prefix` gives the keys a wrapped model's state
    dict has, which load too), the SGD state (momentum buffers) and MultiStepLR's state,
    saved BEFORE the scheduler steps for that epoch. Each head goes to `save_N_<teacher>.pth`
    through the same function, so with the STUDENT's optimizer and scheduler beside the head's
    weights. Returns (student, {teacher: head}, student optimizer, scheduler) as saved.
    """
    torch.manual_seed(epoch)
    student = build_student("r21d", 18, n_classes)
    head_modules = {name: CompositionClassifier(1024, n_classes) for name in teachers}
    for head in head_modules.values():
        torch.nn.init.normal_(head.fc.weight)       # unlike a fresh head
    optimizer = torch.optim.SGD(student.parameters(), lr=learning_rate, momentum=0.9, dampening=0,
                                weight_decay=5e-4, nesterov=False)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones))
    for finished in range(1, epoch + 1):
        for parameter in student.parameters():
            parameter.grad = 1e-3 * torch.randn_like(parameter)
        optimizer.step()
        if finished < epoch:        # the original steps its scheduler after saving the epoch
            scheduler.step()

    def save(path: Path, model: torch.nn.Module) -> None:
        state = model.state_dict()
        if module_prefix:
            state = {f"module.{k}": v for k, v in state.items()}
        torch.save({"epoch": epoch, "arch": "r21d-18", "state_dict": state,
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, path)
    folder.mkdir(parents=True, exist_ok=True)
    save(folder / f"save_{epoch}.pth", student)
    for name, head in head_modules.items():
        save(folder / f"save_{epoch}_{name}.pth", head)
    return student, head_modules, optimizer, scheduler


def panns_checkpoint() -> dict:
    """An official PANNs checkpoint's layout (audioset_tagging_cnn, pytorch/main.py):
    `{'iteration', 'model': model.module.state_dict(), 'sampler': sampler.state_dict()}`,
    the balanced sampler's state being NumPy index arrays and lists of ints."""
    generator = np.random.default_rng(0)
    return {"iteration": 660000,
            "model": {"conv_block1.conv1.weight": torch.randn(64, 1, 3, 3), "fc1.bias": torch.randn(512),
                      "bn0.num_batches_tracked": torch.tensor(12)},
            "sampler": {"indexes_per_class": [generator.permutation(50).astype(np.int64) for _ in range(3)],
                        "queue": [2, 0, 1], "pointers_of_classes": [4, 0, 17]}}


NUMPY2_NAME, NUMPY1_NAME = b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"


def save_as_numpy_1(obj, path: Path, zip_format: bool) -> None:
    """torch.save(obj) as a NumPy 1 installation writes it: its array constructor is
    `numpy.core.multiarray._reconstruct` (the PANNs files are from 2019-2020)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=zip_format)
    if not zip_format:
        path.write_bytes(buffer.getvalue().replace(NUMPY2_NAME, NUMPY1_NAME))
        return
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for name in source.namelist():
            content = source.read(name)
            target.writestr(name, content.replace(NUMPY2_NAME, NUMPY1_NAME) if name.endswith("data.pkl") else content)
    assert NUMPY1_NAME in zipfile.ZipFile(path).read(next(n for n in source.namelist() if n.endswith("data.pkl")))


class WritesAFile:
    """A pickle payload: unpickling it calls `call(*args)`, which creates `target`."""

    def __init__(self, call, target: Path):
        self.call, self.target = call, target

    def __reduce__(self):
        if self.call == "open":
            return open, (str(self.target), "w")
        return os.system, (f"touch {self.target}",)


def malicious_checkpoint(path: Path, target: Path, call: str) -> Path:
    """A checkpoint that looks like ours and runs a payload when fully unpickled."""
    torch.save({"epoch": 1, "arch": "r21d-18", "state_dict": {}, "payload": WritesAFile(call, target)}, path)
    return path


# --- loading -----------------------------------------------------------------------------------

@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_official_panns_checkpoints_load_with_their_numpy_sampler_state(tmp_path, zip_format):
    saved = panns_checkpoint()
    path = tmp_path / "Cnn14_emb512_mAP=0.420.pth"
    save_as_numpy_1(saved, path, zip_format)
    with pytest.raises(Exception, match="Weights only load failed"):   # what plain weights_only does
        torch.load(path, weights_only=True)
    loaded = read_checkpoint_file(path, "--checkpoint")
    assert loaded["iteration"] == 660000
    for key, value in saved["model"].items():
        assert torch.equal(loaded["model"][key], value), key
    for ours, theirs in zip(loaded["sampler"]["indexes_per_class"], saved["sampler"]["indexes_per_class"]):
        assert isinstance(ours, np.ndarray) and ours.dtype == np.int64 and np.array_equal(ours, theirs)
    assert loaded["sampler"]["queue"] == [2, 0, 1] and loaded["sampler"]["pointers_of_classes"] == [4, 0, 17]


@pytest.mark.parametrize("module_prefix", [False, True], ids=["unwrapped", "module_prefix"])
def test_original_release_checkpoint_loads_weights_only(tmp_path, module_prefix):
    student, _, optimizer, scheduler = write_original_release_run(tmp_path, 2, module_prefix=module_prefix)
    checkpoint = load_checkpoint(tmp_path / "save_2.pth")
    assert checkpoint["epoch"] == 2 and checkpoint["arch"] == "r21d-18"
    assert checkpoint["scheduler"]["last_epoch"] == 1
    target = build_student("r21d", 18, 6)
    load_student_weights(target, checkpoint, tmp_path / "save_2.pth")
    for key, value in student.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


@pytest.mark.parametrize("call", ["open", "system"])
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path, call):
    target = tmp_path / "created_by_the_payload"
    path = malicious_checkpoint(tmp_path / "save_1.pth", target, call)
    with pytest.raises(CheckpointFileError) as caught:
        read_checkpoint_file(path, "--resume_path")
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "refused" in message
    assert ("io.open" if call == "open" else "system") in message
    assert not target.exists()


def test_our_rng_state_is_tensors_and_plain_values_and_restores_every_stream(tmp_path):
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    np.random.standard_normal()          # NumPy caches a Gaussian: its cached value is state too
    torch.save(rng_state(), tmp_path / "rng.pth")
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    set_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True))   # no NumPy object inside
    assert (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist()) == expected


# --- resuming an original-release run ----------------------------------------------------------

def new_run_state(teachers, milestones=(2,)) -> TrainingState:
    optim = OptimConfig(learning_rate=0.01, momentum=0.9, dampening=0.0, weight_decay=5e-4, nesterov=False,
                        milestones=tuple(milestones), loss_weight=0.5)
    student = build_student("r21d", 18, 6)
    teacher_list = build_teachers(6, torch.device("cpu"), audio="audio" in teachers, image=None)
    optimizers = make_optimizers(student, heads(teacher_list), optim)
    return TrainingState(student, teacher_list, optimizers, make_scheduler(optimizers["student"], optim),
                         arch="r21d-18")


def test_resuming_an_original_run_loads_its_heads_and_continues_its_schedule(tmp_path):
    student, head_modules, optimizer, _ = write_original_release_run(tmp_path, 2, milestones=(2,))
    state = new_run_state(("audio",))
    path = tmp_path / "save_2.pth"
    restore(state, load_checkpoint(path), path, resume_training=True)
    for key, value in student.state_dict().items():
        assert torch.equal(state.student.state_dict()[key], value), key
    for key, value in head_modules["audio"].state_dict().items():
        assert torch.equal(state.teachers[0].head.state_dict()[key], value), key
    for ours, theirs in zip(state.optimizers["student"].state.values(), optimizer.state.values()):
        assert torch.equal(ours["momentum_buffer"], theirs["momentum_buffer"])
    assert not state.optimizers["audio"].state          # the original never saved the head's SGD
    # An uninterrupted run stepped past milestone 2 after epoch 2: epoch 3 trains at 0.01 × 0.1.
    assert state.start_epoch == 3 and state.scheduler.last_epoch == 2
    assert state.optimizers["student"].param_groups[0]["lr"] == pytest.approx(0.001, rel=1e-12)


def test_a_missing_original_head_file_starts_that_head_afresh_with_a_warning(tmp_path, caplog):
    write_original_release_run(tmp_path, 2)
    (tmp_path / "save_2_audio.pth").unlink()
    state = new_run_state(("audio",))
    fresh = {k: v.clone() for k, v in state.teachers[0].head.state_dict().items()}
    restore(state, load_checkpoint(tmp_path / "save_2.pth"), tmp_path / "save_2.pth", resume_training=True)
    assert all(torch.equal(state.teachers[0].head.state_dict()[k], v) for k, v in fresh.items())
    assert any("audio head" in r.message and "save_2_audio.pth" in r.message for r in caplog.records)


def test_main_resumes_an_original_release_run_with_its_head_and_schedule(data, tmp_path, capsys):
    result = tmp_path / "result"
    write_original_release_run(result, 2, milestones=(2,))
    code, _ = run_main(capsys, data, result, "--use_audio", "--auto_resume", "--n_epochs", "3",
                       "--multistep_milestones", "2")
    assert code == 0
    rows = read_log(result / "train.log")
    assert [r["epoch"] for r in rows] == ["3"] and float(rows[0]["lr"]) == pytest.approx(0.001)
    run_log = (result / "run.log").read_text()
    assert "records no options" in run_log and f"audio head loaded from {result / 'save_2_audio.pth'}" in run_log


def test_a_checkpoint_of_another_class_count_is_one_line_naming_the_mismatch(data, tmp_path, capsys):
    write_original_release_run(tmp_path / "other", 1, n_classes=7)
    code, lines = run_main(capsys, data, tmp_path / "result", "--resume_path", str(tmp_path / "other" / "save_1.pth"))
    assert_one_line_error(code, lines, f"--resume_path {tmp_path / 'other' / 'save_1.pth'} does not match --model/"
                          f"--model_depth/--n_classes (size mismatch for linear.weight", "its opts.json", alone=False)


def test_a_mismatched_checkpoint_found_by_auto_resume_names_auto_resume(data, tmp_path, capsys):
    result = tmp_path / "result"
    write_original_release_run(result, 1, n_classes=7)
    code, lines = run_main(capsys, data, result, "--auto_resume")
    assert_one_line_error(code, lines, f"--auto_resume {result / 'save_1.pth'} does not match --model/--model_depth/"
                          f"--n_classes", "its opts.json", alone=False)
    assert "--resume_path" not in lines[-1]


# --- every entry that reads a checkpoint refuses the payload -----------------------------------

@pytest.mark.parametrize("entry", ["evaluate", "auto_resume", "pretrain_path", "image_teacher_weights"])
def test_main_refuses_a_checkpoint_that_would_run_code_in_one_line(data, tmp_path, capsys, entry):
    target = tmp_path / "created_by_the_payload"
    result = tmp_path / "result"
    result.mkdir()
    evil = malicious_checkpoint(tmp_path / "weights.pth", target, "open")
    extra, option = {
        "evaluate": (["--no_train", "--no_val", "--inference", "--resume_path", str(evil)], "--resume_path"),
        "auto_resume": (["--auto_resume"], "--auto_resume"),
        "pretrain_path": (["--pretrain_path", str(evil)], "--pretrain_path"),
        "image_teacher_weights": (["--use_image", "--image_teacher_weights", str(evil)], "--image_teacher_weights"),
    }[entry]
    if entry == "auto_resume":
        evil = evil.rename(result / "save_last.pth")
    code, lines = run_main(capsys, data, result, *extra)
    assert_one_line_error(code, lines, f"{option} {evil} was refused", "io.open", alone=False)
    assert entry != "auto_resume" or "--resume_path" not in lines[-1]
    assert not target.exists()
