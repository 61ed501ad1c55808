"""Reading checkpoint files without running code from them.

A `.pth` file is a pickle, and a pickle can call any Python function while it loads. Every
checkpoint of this project (ours, the original release's, torchvision's, official PANNs
files) is read by `read_checkpoint_file`: torch's weights-only unpickler, which builds
only tensors, numbers, strings, lists, tuples, dicts, `OrderedDict`/`Counter` and the
optimizer/scheduler states made of them, plus plain NumPy arrays and scalars (official
PANNs checkpoints store their training sampler's state as NumPy arrays). A file that needs
anything else is refused with a one-line error before any of it is built.
"""
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from errors import UserError, require_file

# NumPy's array and scalar constructors under their NumPy 2 and NumPy 1 module names (files
# written under NumPy 1, as the PANNs release was, name `numpy.core.multiarray`).
_MULTIARRAY = np._core.multiarray
_NUMERIC_DTYPES = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                   np.uint64, np.float16, np.float32, np.float64, np.complex64, np.complex128)
NUMPY_GLOBALS = [
    _MULTIARRAY._reconstruct, (_MULTIARRAY._reconstruct, "numpy.core.multiarray._reconstruct"),
    _MULTIARRAY.scalar, (_MULTIARRAY.scalar, "numpy.core.multiarray.scalar"),
    np.ndarray, np.dtype, *(type(np.dtype(t)) for t in _NUMERIC_DTYPES),
]
# What a path to weights or a checkpoint must name, in the messages.
CHECKPOINT_FILE = "a checkpoint file (.pth)"


class CheckpointFileError(UserError):
    """A checkpoint file that cannot be read safely; the message is one line naming the file."""


def read_checkpoint_file(path: str | Path, option: str = "checkpoint", mmap: bool = False) -> object:
    """The object `torch.save` wrote to `path`, on the CPU, built by the weights-only unpickler.

    option: how the user named the file (e.g. `--resume_path`), for the messages.
    mmap: map tensor storages instead of reading them (for a quick look at small entries).
    Raises MissingFileError (no such file), UserError (a folder), or CheckpointFileError:
    refused because loading it would run code (nothing of it is executed), or unreadable
    (truncated, not PyTorch).
    """
    path = Path(path)
    require_file(path, option, CHECKPOINT_FILE)
    try:
        # torch warns about pickle protocols it did not write; the error below says enough.
        with warnings.catch_warnings(), torch.serialization.safe_globals(NUMPY_GLOBALS):
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:   # noqa: BLE001 - whatever garbage bytes make the unpickler raise
        refused = _refused_part(str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if refused:
            raise CheckpointFileError(f"{option} {path} was refused: unpickling it would {refused}; a "
                                      f"checkpoint may hold only tensors, numbers, strings, lists and "
                                      f"dicts, and nothing of this one was run") from None
        raise CheckpointFileError(_unreadable(option, path, e)) from None


def _refused_part(message: str) -> str | None:
    """What the weights-only unpickler refused to call or build, from its long message;
    None when it stopped for another reason (garbage bytes)."""
    if found := re.search(r"GLOBAL (\S+)", message):
        return f"call {found[1]}"
    if found := re.search(r"but got <class '([^']+)'>", message):
        return f"build a {found[1]}"
    if found := re.search(r"(Can only (?:build|create)[^\n]*|Trying to call reduce[^\n]*)", message):
        return f"do what it refuses: {found[1].strip()}"
    return None


def _unreadable(option: str, path: Path, error: Exception) -> str:
    if isinstance(error, EOFError):
        reason = "it ends too early"
    elif isinstance(error, (RuntimeError, OSError)) and str(error).strip():
        # torch's own messages run to several sentences: their first one says what is wrong.
        reason = str(error).strip().splitlines()[0].split(". ")[0]
    else:
        reason = "unrecognised content"
    return f"{option} {path} is not a readable checkpoint ({reason}): truncated or not a PyTorch file"
