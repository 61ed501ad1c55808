"""A result folder belongs to one run at a time, is left as it was by a run refused before
it starts, and says what it holds when a run stops."""
import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from datasets.audio_cache import CACHE_FOLDER
from errors import UserError
from training.checkpoint import RESUMABLE_FILE, checkpoint_epoch, latest_checkpoint

LOCK_FILE = "run.lock"
RUN_LOG = "run.log"
# What a run writes before its checks are done: the lock, its log and, when the audio folder is
# read-only, the audio features' cache. A run refused by a UserError takes these back as long as
# it has written nothing else (opts.json, checkpoints: those of a started run are kept).
PRELUDE = (LOCK_FILE, RUN_LOG, CACHE_FOLDER)


@contextlib.contextmanager
def hold_result_folder(result_path: Path) -> Iterator[None]:
    """Create `result_path` and hold its lock for the block: a second run into the same
    folder stops at once with a UserError naming the holder's pid.

    The lock is an `flock` on `<result_path>/run.lock` (which holds the pid): the operating
    system releases it when the process ends, however it ends, so a killed run leaves no
    stale lock. Under torchrun only rank 0 (RANK) holds it. An existing file or an unwritable
    folder is a UserError.

    A UserError from the block (a refused run) leaves the folder as it was, as long as the
    run wrote nothing but its PRELUDE: the files it created are removed, run.log and run.lock
    get their earlier content back, and the folders it created go when they are empty.
    """
    result_path = Path(result_path)
    created = _make_folder(result_path)
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    try:
        before = _entries(result_path)
    except OSError as e:
        raise UserError(f"--result_path {result_path} cannot be read ({e.strerror}): pass a folder you can "
                        f"write to") from None
    try:
        fd = _lock(result_path)
    except UserError:
        _remove_empty(created)
        raise
    taken_back = False
    try:
        earlier_lock = os.pread(fd, 4096, 0) if LOCK_FILE in before else None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    except UserError:
        taken_back = _others(_entries(result_path)) == _others(before)
        if taken_back:
            _take_back(result_path, before, fd, earlier_lock)
        raise
    finally:
        os.close(fd)
        if taken_back:
            _remove_empty(created)


def _lock(result_path: Path) -> int:
    """An open descriptor of `run.lock`, flock'ed. A lock file that a refused run removed
    while this one waited for it is not the folder's lock any more: then again, on the new one."""
    path = result_path / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"--result_path {result_path} is not writable ({e.strerror}): pass a folder "
                            f"you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise UserError(f"{result_path} is used by another run (pid {holder}): wait for it to "
                            f"end, or pass another --result_path") from None
        if not os.access(result_path, os.W_OK):
            os.close(fd)
            raise UserError(f"--result_path {result_path} is not writable: pass a folder you can write to")
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)


def _entries(folder: Path) -> dict[str, tuple[bool, int, int]]:
    """name → (is a folder, size, modification time) of everything in `folder`."""
    entries = {}
    for entry in os.scandir(folder):
        with contextlib.suppress(FileNotFoundError):
            info = entry.stat(follow_symlinks=False)
            entries[entry.name] = (entry.is_dir(follow_symlinks=False), info.st_size, info.st_mtime_ns)
    return entries


def _others(entries: dict) -> dict:
    return {name: entry for name, entry in entries.items() if name not in PRELUDE}


def _take_back(result_path: Path, before: dict, fd: int, earlier_lock: bytes | None) -> None:
    """Undo what a refused run wrote of its PRELUDE (`before`: the folder's entries before it)."""
    log = result_path / RUN_LOG
    if RUN_LOG not in before:
        log.unlink(missing_ok=True)
    elif log.is_file() and log.stat().st_size > before[RUN_LOG][1]:
        os.truncate(log, before[RUN_LOG][1])
    if CACHE_FOLDER not in before:
        shutil.rmtree(result_path / CACHE_FOLDER, ignore_errors=True)
    if earlier_lock is None:
        (result_path / LOCK_FILE).unlink(missing_ok=True)
    else:
        os.ftruncate(fd, 0)
        os.pwrite(fd, earlier_lock, 0)


def _remove_empty(folders: list[Path]) -> None:
    """Remove `folders` (innermost last in the list) that are empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


def check_fresh_start(result_path: Path, train: bool, resume_path: Path | None) -> None:
    """A training run that starts afresh would overwrite the checkpoints and logs of the run
    that `result_path` already holds: UserError saying how to continue that run or keep it."""
    if not train or resume_path is not None:
        return
    newest = latest_checkpoint(result_path)
    if newest is not None:
        raise UserError(f"--result_path {result_path} holds the checkpoints of an earlier run ({newest.name}), "
                        f"which a new run would overwrite: pass --auto_resume to continue that run, or another "
                        f"--result_path to start a new one")
    # Nothing that --auto_resume continues, but save_model.pth or head files: a run stopped
    # in its first epoch. A new run would overwrite them too.
    best = Path(result_path) / "save_model.pth"
    earlier = min(Path(result_path).glob("save_*.pth"), default=None)
    if earlier is None:
        return
    how = (f"pass --resume_path {best} to continue from it, or another --result_path to start a new one"
           if best.is_file() else "pass another --result_path to start a new run")
    raise UserError(f"--result_path {result_path} holds {(best if best.is_file() else earlier).name} of an earlier "
                    f"run but no {RESUMABLE_FILE}, which a new run would overwrite: {how}")


def _make_folder(result_path: Path) -> list[Path]:
    """Create `result_path` (and its parents); the folders created, outermost first."""
    if result_path.exists() and not result_path.is_dir():
        raise UserError(f"--result_path {result_path} is a file, not a folder: pass a folder")
    missing = [folder for folder in [result_path, *result_path.parents] if not folder.exists()][::-1]
    try:
        result_path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--result_path {result_path} cannot be created ({e.strerror}): pass a folder "
                        f"you can write to") from None
    return missing


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
    return (f"interrupted: the newest checkpoint is {newest} (epoch {checkpoint_epoch(newest)}); rerun the same "
            f"command with --auto_resume to continue from it")
