"""Checkpoints: atomic writes, the original's file names and format, full resume state."""
import os
import random
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.factory import strip_module_prefix


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, permissions); the previous one is intact."""


def atomic_save(obj, path: Path) -> None:
    """torch.save to `<path>.tmp`, fsync, rename: the file at `path` is always complete.

    A failure (disk full, kill) leaves the previous file at `path` untouched; an OSError
    becomes a CheckpointWriteError naming the file.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointWriteError(f"could not write checkpoint {path}: {e.strerror or e} (free disk "
                                   f"space or change --result_path); the previous checkpoint is intact") from e


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_state(epoch: int, arch: str, student: nn.Module, heads: nn.ModuleDict,
                   optimizers: dict[str, torch.optim.Optimizer], scheduler, best_acc: float) -> dict:
    """The original's keys (`epoch`, `arch`, `state_dict`, `optimizer`, `scheduler`) plus
    the heads, their optimizers, the best accuracy and the RNG state for an exact resume."""
    return {
        "epoch": epoch,
        "arch": arch,
        "state_dict": unwrap(student).state_dict(),
        "optimizer": optimizers["student"].state_dict(),
        "scheduler": scheduler.state_dict(),
        "heads": {name: head.state_dict() for name, head in heads.items()},
        "head_optimizers": {name: optimizers[name].state_dict() for name in heads},
        "best_acc": best_acc,
        "rng": rng_state(),
    }


def save_training_state(result_path: Path, state: dict, name: str) -> None:
    """`<name>.pth` plus, as in the original, `<name>_<teacher>.pth` for each head."""
    atomic_save(state, result_path / f"{name}.pth")
    for head_name, head_state in state["heads"].items():
        atomic_save({"epoch": state["epoch"], "state_dict": head_state,
                     "optimizer": state["head_optimizers"][head_name]},
                    result_path / f"{name}_{head_name}.pth")


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--resume_path {path} does not exist (pass a save_<epoch>.pth file or 'latest')")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        # torch's own message runs to several sentences: its first one says what is wrong.
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0]
        raise ValueError(f"--resume_path {path} is not a readable checkpoint ({reason}): truncated or not "
                         f"a PyTorch file; pass another save_*.pth") from e


def load_student_weights(student: nn.Module, checkpoint: dict, path: Path) -> None:
    """Load `state_dict` strictly; accepts the original release's checkpoints (and their
    DataParallel `module.` prefix)."""
    if "state_dict" not in checkpoint:
        raise ValueError(f"{path} has no 'state_dict' entry: not a CCL / 3D-ResNets checkpoint")
    try:
        unwrap(student).load_state_dict(strip_module_prefix(checkpoint["state_dict"]), strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ValueError(f"{path} does not match --model/--model_depth/--n_classes: {first}") from e


def latest_checkpoint(result_path: Path) -> Path | None:
    """The newest complete checkpoint in `result_path`: `save_last.pth` (written every
    epoch) when present, else the `save_<epoch>.pth` with the highest epoch."""
    result_path = Path(result_path)
    if (result_path / "save_last.pth").is_file():
        return result_path / "save_last.pth"
    numbered = [(int(m[1]), p) for p in result_path.glob("save_*.pth")
                if (m := re.fullmatch(r"save_(\d+)\.pth", p.name))]
    return max(numbered)[1] if numbered else None
