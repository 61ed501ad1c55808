"""Checkpoints: atomic writes, the original's file names and format, full resume state.

Everything a checkpoint holds is a tensor or a plain value (numbers, strings, lists, dicts),
so it loads with torch's weights-only unpickler (`models.checkpoint_file`), which never runs
code from the file.
"""
import io
import random
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from errors import TrainingStopped, UserError
from models.checkpoint_file import read_checkpoint_file
from models.factory import strip_module_prefix
from training.files import write_atomically

# The checkpoints `--auto_resume` and `--resume_path latest` continue (`latest_checkpoint`).
RESUMABLE_FILE = "save_last.pth or save_<epoch>.pth"


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


class CheckpointWriteError(TrainingStopped):
    """A checkpoint could not be written (disk full, permissions); the message names the
    newest checkpoint on disk, complete, or says that there is none yet."""


def atomic_save(obj, path: Path) -> None:
    """torch.save `obj` to `path` through `write_atomically`: the file at `path` is always
    complete, and a failure (disk full, kill) leaves the previous one untouched. An OSError
    becomes a CheckpointWriteError naming the file and what its folder still holds."""
    # Serialized in memory first: torch's zip writer turns a failed write (disk full) into a
    # RuntimeError about stream positions, a plain write raises the OSError that says why.
    serialized = io.BytesIO()
    torch.save(obj, serialized)
    try:
        write_atomically(path, serialized.getbuffer())
    except OSError as e:
        raise CheckpointWriteError(f"could not write checkpoint {path}: {e.strerror or e} (free disk "
                                   f"space or change --result_path); {_kept(Path(path).parent)}") from e


def _kept(folder: Path) -> str:
    newest = latest_checkpoint(folder)
    if newest is None:
        return f"there is no {RESUMABLE_FILE} to resume from yet"
    return f"the newest checkpoint, {newest} (epoch {checkpoint_epoch(newest)}), is intact"


def checkpoint_epoch(path: Path) -> str:
    """The epoch a checkpoint file records, read without loading its tensors; 'unknown'
    when it cannot be read."""
    try:
        return str(read_checkpoint_file(path, mmap=True)["epoch"])
    except (ValueError, OSError, KeyError, TypeError):
        return "unknown"


def remove_temporary_files(result_path: Path) -> None:
    """Delete the `.tmp` files that killed runs left behind. Only for the process that
    writes the checkpoints, which holds the folder's lock (`training.result_folder`): then no
    other write is under way."""
    for path in Path(result_path).glob("*.pth.*tmp"):
        path.unlink(missing_ok=True)


def rng_state() -> dict:
    """Every RNG of this process as tensors and plain values (SPEC: weights-only loadable)."""
    bit_generator, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"bit_generator": bit_generator, "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(position), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached_gaussian)},
             "python": [version, list(internal), gauss_next]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved; a NumPy state held as NumPy's own tuple (what
    `np.random.get_state` returns) is accepted as it is."""
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    if isinstance(saved, dict):
        saved = (saved["bit_generator"], saved["keys"].numpy().astype(np.uint32), saved["pos"],
                 saved["has_gauss"], saved["cached_gaussian"])
    np.random.set_state(saved)
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(checkpoint: dict, result_path: Path, name: str) -> None:
    """`<name>.pth` plus, as in the original, `<name>_<teacher>.pth` for each head
    (`training.state.checkpoint_of` gives the dict)."""
    atomic_save(checkpoint, result_path / f"{name}.pth")
    for head_name, head_state in checkpoint["heads"].items():
        atomic_save({"epoch": checkpoint["epoch"], "state_dict": head_state,
                     "optimizer": checkpoint["head_optimizers"][head_name]},
                    result_path / f"{name}_{head_name}.pth")


def load_checkpoint(path: Path, option: str = "--resume_path") -> dict:
    """The checkpoint at `path`, read without running code. UserError (one line naming
    `option` and the file) when it is missing, unreadable, refused or not a dict."""
    path = Path(path)
    checkpoint = read_checkpoint_file(path, option)
    if not isinstance(checkpoint, dict):
        raise UserError(f"{option} {path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


def original_head_file(path: Path, head_name: str) -> Path:
    """Where the original release kept a head of checkpoint `save_N.pth`: `save_N_<head>.pth`."""
    path = Path(path)
    return path.with_name(f"{path.stem}_{head_name}{path.suffix}")


def load_student_weights(student: nn.Module, checkpoint: dict, path: Path, option: str = "--resume_path") -> None:
    """Load `state_dict` strictly; accepts the original release's checkpoints (and their
    DataParallel `module.` prefix). `option` named `path`, for the messages."""
    if "state_dict" not in checkpoint:
        raise UserError(f"{option} {path} has no 'state_dict' entry: not a CCL / 3D-ResNets checkpoint")
    try:
        unwrap(student).load_state_dict(strip_module_prefix(checkpoint["state_dict"]), strict=True)
    except RuntimeError as e:
        # torch's message: a header line, then the missing / unexpected / resized keys.
        reason = " ".join(str(e).split()).split(": ", 1)[-1][:300]
        raise UserError(f"{option} {path} does not match --model/--model_depth/--n_classes ({reason}); pass the "
                        f"options it was trained with (its opts.json)") from None


def latest_checkpoint(result_path: Path) -> Path | None:
    """The newest complete checkpoint in `result_path`: `save_last.pth` (written every
    epoch) when present, else the `save_<epoch>.pth` with the highest epoch."""
    result_path = Path(result_path)
    if (result_path / "save_last.pth").is_file():
        return result_path / "save_last.pth"
    numbered = [(int(m[1]), p) for p in result_path.glob("save_*.pth")
                if (m := re.fullmatch(r"save_(\d+)\.pth", p.name))]
    return max(numbered)[1] if numbered else None
