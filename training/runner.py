"""The training run: resume, epochs, validation, checkpoints and logs (SPEC §4)."""
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from errors import UserError
from models.factory import strip_module_prefix
from training.checkpoint import (load_checkpoint, load_student_weights, original_head_file,
                                 save_training_state, set_rng_state, training_state)
from training.distributed import is_main_process, rank
from training.logs import EpochLog, TensorBoard, truncate_after
from training.loop import EpochSettings, train_epoch, validate
from training.teachers import Teacher, heads

log = logging.getLogger("ccl")


@dataclass
class RunState:
    student: nn.Module
    teachers: list[Teacher]
    optimizers: dict[str, torch.optim.Optimizer]
    scheduler: torch.optim.lr_scheduler.LRScheduler
    options: dict = field(default_factory=dict)             # training.run_options.recorded_options
    option_changes: list[dict] = field(default_factory=list)   # those a resume was allowed to make
    start_epoch: int = 1
    best_acc: float = 0.0


def restore(state: RunState, checkpoint: dict, path: Path, resume_training: bool) -> None:
    """Student weights always; with `resume_training`, also heads, optimizers, scheduler,
    epoch, best accuracy and RNG.

    Original-release checkpoints keep each head in `save_N_<head>.pth` beside `save_N.pth`
    (with the student's optimizer, not the head's): the head's weights are loaded from there
    and its optimizer starts afresh, as it did when the original resumed. A head found
    nowhere starts from scratch, with a warning."""
    load_student_weights(state.student, checkpoint, path)
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


def seed_epoch(loader, seed: int, epoch: int) -> None:
    """Make epoch `epoch` depend only on (seed, epoch): identical after a resume.

    The training sampler's shuffle and its items' augmentation seeds follow the epoch
    (datasets.build_loader), and the training process's own randomness is re-seeded; ranks
    get different streams."""
    torch.manual_seed(seed + epoch + 100_003 * rank())
    loader.sampler.set_epoch(epoch)


def fit(opt, state: RunState, train_loader, val_loader, settings: EpochSettings,
        device: torch.device, result_path: Path, arch: str) -> None:
    """Epochs start_epoch..n_epochs: train, step the scheduler, validate every
    `--val_freq`, keep `save_model.pth` (best clip accuracy), `save_<epoch>.pth` every
    `--checkpoint` epochs and `save_last.pth` every epoch (for --auto_resume)."""
    train_log, val_log = EpochLog(result_path / "train.log"), EpochLog(result_path / "val.log")
    for path in (train_log.path, val_log.path):
        truncate_after(path, state.start_epoch - 1)
    board = TensorBoard(result_path, opt.tensorboard)
    head_modules = heads(state.teachers)
    optimizers = list(state.optimizers.values())
    try:
        for epoch in range(state.start_epoch, opt.n_epochs + 1):
            lr = state.optimizers["student"].param_groups[0]["lr"]
            if train_loader is not None:
                seed_epoch(train_loader, opt.manual_seed, epoch)
                summary = train_epoch(epoch, state.student, state.teachers, train_loader, optimizers,
                                      settings, device)
                state.scheduler.step()
                train_log.write({"epoch": epoch, "loss": summary.pop("loss"), "acc": summary.pop("acc"),
                                 "lr": lr, **summary})
                board.scalars("train", {**summary, "lr": lr}, epoch)
                log.info("epoch %d train: %s", epoch, _short(summary))
            if val_loader is not None and epoch % opt.val_freq == 0:
                metrics = validate(state.student, val_loader, settings, device)
                val_log.write({"epoch": epoch, **metrics})
                board.scalars("val", metrics, epoch)
                log.info("epoch %d val: loss %.4f acc %.4f", epoch, metrics["loss"], metrics["acc"])
                if metrics["acc"] > state.best_acc:
                    state.best_acc = metrics["acc"]
                    _save(state, epoch, head_modules, result_path, arch, "save_model")
            if train_loader is None:
                break
            if epoch % opt.checkpoint == 0:
                _save(state, epoch, head_modules, result_path, arch, f"save_{epoch}")
            _save(state, epoch, head_modules, result_path, arch, "save_last")
    finally:
        board.close()


def _save(state: RunState, epoch: int, head_modules, result_path: Path, arch: str, name: str) -> None:
    if is_main_process():
        save_training_state(result_path, training_state(epoch, arch, state.student, head_modules,
                                                        state.optimizers, state.scheduler, state.best_acc,
                                                        state.options, state.option_changes), name)


def _short(summary: dict) -> str:
    return " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items())
