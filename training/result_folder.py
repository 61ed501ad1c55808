"""A result folder belongs to one run at a time, and says what it holds when a run stops."""
import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from errors import UserError
from models.checkpoint_file import read_checkpoint_file
from training.checkpoint import latest_checkpoint, remove_temporary_files

LOCK_FILE = "run.lock"


@contextlib.contextmanager
def hold_result_folder(result_path: Path) -> Iterator[None]:
    """Create `result_path` and hold its lock for the block: a second run into the same
    folder stops at once with a UserError naming the holder's pid.

    The lock is an `flock` on `<result_path>/run.lock` (which holds the pid): the operating
    system releases it when the process ends, however it ends, so a killed run leaves no
    stale lock. Under torchrun only rank 0 (RANK) holds it. Once held, the `.tmp` files of
    killed runs are removed. An existing file or an unwritable folder is a UserError.
    """
    result_path = Path(result_path)
    _make_folder(result_path)
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    try:
        fd = os.open(result_path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"--result_path {result_path} is not writable ({e.strerror}): pass a folder "
                        f"you can write to") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{result_path} is used by another run (pid {_holder(fd)}): wait for it to "
                            f"end, or pass another --result_path") from None
        if not os.access(result_path, os.W_OK):
            raise UserError(f"--result_path {result_path} is not writable: pass a folder you can write to")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        remove_temporary_files(result_path)
        yield
    finally:
        os.close(fd)


def check_fresh_start(result_path: Path, train: bool, resume_path: Path | None) -> None:
    """A training run that starts afresh would overwrite the checkpoints and logs of the run
    that `result_path` already holds: UserError saying how to continue that run or keep it."""
    if not train or resume_path is not None:
        return
    earlier = latest_checkpoint(result_path) or min(Path(result_path).glob("save_*.pth"), default=None)
    if earlier is not None:
        raise UserError(f"--result_path {result_path} holds the checkpoints of an earlier run ({earlier.name}), "
                        f"which a new run would overwrite: pass --auto_resume to continue that run, or another "
                        f"--result_path to start a new one")


def _make_folder(result_path: Path) -> None:
    if result_path.exists() and not result_path.is_dir():
        raise UserError(f"--result_path {result_path} is a file, not a folder: pass a folder")
    try:
        result_path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--result_path {result_path} cannot be created ({e.strerror}): pass a folder "
                        f"you can write to") from None


def _holder(fd: int) -> str:
    """The pid the holding run wrote into the lock file ('unknown' while it has not yet)."""
    text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    return text if text.isdigit() else "unknown"


def interruption_summary(result_path: Path, training: bool) -> str:
    """One line for a run stopped by Ctrl-C: what the folder holds and how to go on."""
    if not training:
        return ("interrupted: the evaluation did not finish (its output files may be missing or partial; "
                "the checkpoints are untouched): rerun the command")
    newest = latest_checkpoint(result_path)
    if newest is None:
        return (f"interrupted before the first checkpoint: no save_*.pth in {result_path}; rerun the "
                f"command to start again")
    return (f"interrupted: the newest checkpoint is {newest} (epoch {_epoch(newest)}); rerun the same "
            f"command with --auto_resume to continue from it")


def _epoch(checkpoint: Path) -> str:
    try:
        return str(read_checkpoint_file(checkpoint, mmap=True)["epoch"])
    except (ValueError, OSError, KeyError, TypeError):
        return "unknown"
