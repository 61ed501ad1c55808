"""What a run trains and where it stands, as a checkpoint holds it and as a resume restores it."""
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from errors import UserError
from models.factory import strip_module_prefix
from training.checkpoint import (load_checkpoint, load_student_weights, original_head_file, rng_state,
                                 set_rng_state, unwrap)
from training.teachers import Teacher, heads

log = logging.getLogger("ccl")


@dataclass
class TrainingState:
    """The student (as the step calls it: wrapped for DDP, DataParallel or torch.compile),
    its teachers, one optimizer per module group (`student` first, then each head), the
    student's learning-rate schedule; `arch` (e.g. `r21d-18`), `options` (opts.json) and
    `option_changes` (those a resume was allowed to make) for the checkpoints; the next
    epoch and the best validation clip accuracy so far (-inf before the first validation, so
    that the first one always writes `save_model.pth`, even at 0 accuracy)."""
    student: nn.Module
    teachers: list[Teacher]
    optimizers: dict[str, torch.optim.Optimizer]
    scheduler: torch.optim.lr_scheduler.LRScheduler
    arch: str
    options: dict = field(default_factory=dict)
    option_changes: list[dict] = field(default_factory=list)
    start_epoch: int = 1
    best_acc: float = -math.inf


def checkpoint_of(state: TrainingState, epoch: int) -> dict:
    """The original's keys (`epoch`, `arch`, `state_dict`, `optimizer`, `scheduler`) plus
    the heads, their optimizers, the best accuracy and the RNG state for an exact resume,
    and the run's options (`training.run_options`: plain values) with the changes a resume
    was allowed to make to them."""
    head_modules = heads(state.teachers)
    return {
        "epoch": epoch,
        "arch": state.arch,
        "state_dict": unwrap(state.student).state_dict(),
        "optimizer": state.optimizers["student"].state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "heads": {name: head.state_dict() for name, head in head_modules.items()},
        "head_optimizers": {name: state.optimizers[name].state_dict() for name in head_modules},
        "best_acc": state.best_acc,
        "rng": rng_state(),
        "options": state.options,
        "option_changes": state.option_changes,
    }


def restore(state: TrainingState, checkpoint: dict, path: Path, resume_training: bool,
            option: str = "--resume_path") -> None:
    """Student weights always; with `resume_training`, also heads, optimizers, scheduler,
    epoch, best accuracy and RNG.

    Original-release checkpoints keep each head in `save_N_<head>.pth` beside `save_N.pth`
    (with the student's optimizer, not the head's): the head's weights are loaded from there
    and its optimizer starts afresh, as it did when the original resumed. A head found
    nowhere starts from scratch, with a warning. `option` named `path`, for the messages."""
    load_student_weights(state.student, checkpoint, path, option)
    if not resume_training:
        return
    if "optimizer" in checkpoint:
        state.optimizers["student"].load_state_dict(checkpoint["optimizer"])
    if "scheduler" in checkpoint:
        state.scheduler.load_state_dict(checkpoint["scheduler"])
        continue_original_schedule(state.scheduler, checkpoint["epoch"])
    saved_heads = checkpoint.get("heads", {})
    for teacher in state.teachers:
        head_file = original_head_file(path, teacher.name)
        if teacher.name in saved_heads:
            teacher.head.load_state_dict(saved_heads[teacher.name])
            state.optimizers[teacher.name].load_state_dict(checkpoint["head_optimizers"][teacher.name])
        elif head_file.is_file():
            load_head_weights(teacher.head, head_file)
            log.info("%s head loaded from %s; its optimizer starts afresh", teacher.name, head_file)
        else:
            log.warning("%s has no %s head (nor %s): it starts from scratch", path, teacher.name, head_file.name)
    state.start_epoch = checkpoint["epoch"] + 1
    state.best_acc = checkpoint.get("best_acc", 0.0)
    if "rng" in checkpoint:
        set_rng_state(checkpoint["rng"])


def continue_original_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler, epoch: int) -> None:
    """Step a scheduler saved by the original release once more.

    The original saved `save_N.pth` before stepping its scheduler for epoch N (its
    `last_epoch` is N - 1), ours after; without this step a resumed original run would
    reach each learning-rate milestone one epoch late."""
    if scheduler.last_epoch == epoch - 1:
        scheduler.step()


def load_head_weights(head: nn.Module, head_file: Path) -> None:
    """A composition head's `state_dict` from an original-release head file, strictly."""
    saved = load_checkpoint(head_file, "head checkpoint")
    if "state_dict" not in saved:
        raise UserError(f"head checkpoint {head_file} has no 'state_dict' entry")
    try:
        head.load_state_dict(strip_module_prefix(saved["state_dict"]), strict=True)
    except RuntimeError as e:
        reason = " ".join(line.strip() for line in str(e).splitlines()[:2])
        raise UserError(f"head checkpoint {head_file} does not match --n_classes: {reason}") from None
