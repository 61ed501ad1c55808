"""The audio feature cache: every feature file of a dataset in one memory-mapped array,
written once next to the features and rebuilt when a file changes.

Reading 100,000 small `.npy` files costs seconds and, held as one array per process, a
copy of every feature per run; the cache makes a start-up one stat per file plus an
index read, and the array a memory-map that loader workers share through the page cache.

Files, in `<audio_path>/.ccl_cache/` (or the fallback folder when that is not writable):
  <name>.index.npz    what the rows were built from: the files' names (relative to the
                      audio path) and stat stamps, rows per file, (D,) or (T, D) per
                      file, D, the rows file's name, the time the files were looked at
  <name>-<id>.f32     the rows, (R, D) float32, raw, in file order
  <name>.lock         held by the process that checks or builds the cache
A cache is used only when every file's name and stamp (size, modification and change
times, inode) match its index and no file was modified within RACY_NS before it was looked
at (a change in the same timestamp tick would leave the stamp unchanged); otherwise it is
rebuilt, reading and checking every file as
`AudioBank` does. Builders write under fresh names and publish with atomic renames (rows
first, then the index), so a reader sees an old or a new cache, never half of one; the
lock keeps concurrent processes (DDP ranks, two runs) from building it twice.
"""
from __future__ import annotations

import fcntl
import logging
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from errors import UserError

from .audio import BROKEN_FILE_FIX, AudioBank, mixed_dim_error, read_audio_array

CACHE_FOLDER = ".ccl_cache"
FORMAT = 1
RACY_NS = 2_000_000_000   # coarser than any file system's timestamp tick
INODE_BITS = (1 << 63) - 1
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Listing:
    """The feature files a dataset asks for, as found on disk now.

    paths: the existing files in dataset order; names: their names relative to the audio
    path, "\\n"-joined, UTF-8; stamps: (n, 4) int64 size, mtime and ctime in ns, inode
    (a file replaced by a rename has another inode and ctime, whatever its size and mtime);
    listed_ns: the wall-clock time just before the files were looked at.
    """
    paths: list[str]
    names: bytes
    stamps: np.ndarray
    listed_ns: int


def cached_audio_bank(files: Sequence[str | os.PathLike | None], audio_path: str | os.PathLike,
                      name: str, fallback: str | os.PathLike | None = None) -> AudioBank:
    """The `AudioBank` of `files` (per video a feature file under `audio_path`, or None),
    served from the cache `name` (a file name stem that identifies the dataset).

    The cache lives in `<audio_path>/.ccl_cache`; when that folder cannot be written, in
    `fallback` (said in a log line). A broken file, or one whose D differs from the first
    file's, is the UserError `AudioBank` raises, naming it; so is a file that disappears.
    """
    if all(f is None for f in files):
        return AudioBank(files)
    listing = _list(files, audio_path)
    folders = [Path(audio_path) / CACHE_FOLDER] + ([Path(fallback)] if fallback else [])
    for folder in folders:
        bank = _load(folder, name, listing, files)
        if bank is not None:
            return bank
    problems = []
    for folder in folders:
        try:
            with _locked(folder, name):
                if problems:
                    log.warning("audio feature cache: %s; writing it to %s instead",
                                problems[0], folder)
                return _load(folder, name, listing, files) or _build(folder, name, listing, files)
        except OSError as e:
            problems.append(f"cannot write {folder} ({e.strerror or e})")
    raise UserError(f"audio feature cache: {'; '.join(problems)}; make {folders[0]} "
                    f"writable" + ("" if fallback else " or give a writable fallback folder"))


def _list(files: Sequence[str | os.PathLike | None], audio_path: str | os.PathLike) -> _Listing:
    listed_ns = time.time_ns()
    prefix = os.path.join(os.fspath(audio_path), "")
    paths = [os.fspath(f) for f in files if f is not None]
    stamps = np.empty((len(paths), 4), np.int64)
    for i, path in enumerate(paths):
        try:
            stat = os.stat(path)
        except OSError as e:
            raise UserError(f"{path}: cannot read audio feature ({e.strerror}); "
                            f"{BROKEN_FILE_FIX}") from None
        # Some file systems number inodes above 2**63: the low 63 bits tell files apart.
        stamps[i] = stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino & INODE_BITS
    names = "\n".join(p[len(prefix):] if p.startswith(prefix) else os.path.abspath(p)
                      for p in paths)
    return _Listing(paths, names.encode(), stamps, listed_ns)


@contextmanager
def _locked(folder: Path, name: str) -> Iterator[None]:
    """Hold `<folder>/<name>.lock`, creating the folder; OSError when it cannot be written."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:
            # A file system without locks: concurrent builders then each write their own
            # files and the last rename wins, which is still a whole cache.
            pass
        yield


def _load(folder: Path, name: str, listing: _Listing,
          files: Sequence[str | os.PathLike | None]) -> AudioBank | None:
    """The cache in `folder` when it matches `listing`, else None."""
    for _ in range(3):   # a rebuild elsewhere may delete the rows file named by the index read
        try:
            with np.load(folder / f"{name}.index.npz") as index:
                fields = {key: index[key] for key in index.files}
        except FileNotFoundError:
            return None
        except Exception as e:   # an index cut short or from another version: rebuild it
            log.info("audio feature cache: ignoring %s (%s)", folder / f"{name}.index.npz", e)
            return None
        if not _matches(fields, listing):
            return None
        rows_path = folder / str(fields["rows_file"])
        dim, n_rows = int(fields["dim"]), int(fields["counts"].sum())
        try:
            complete = os.stat(rows_path).st_size == n_rows * dim * 4
        except FileNotFoundError:
            continue
        if not complete:
            return None
        rows = np.memmap(rows_path, np.float32, "r", shape=(n_rows, dim))
        return _bank(rows, fields["counts"], fields["ndims"], listing, files)
    return None


def _matches(fields: dict[str, np.ndarray], listing: _Listing) -> bool:
    return (fields.get("format") == FORMAT
            and fields["names"].tobytes() == listing.names
            and np.array_equal(fields["stamps"], listing.stamps)
            and not (fields["stamps"][:, 1] >= int(fields["listed_ns"]) - RACY_NS).any())


def _bank(rows: np.ndarray, counts: np.ndarray, ndims: np.ndarray, listing: _Listing,
          files: Sequence[str | os.PathLike | None]) -> AudioBank:
    """The bank of the videos of `files` over `rows`, the rows of the listed files
    (counts (n,) rows and ndims (n,) 1 or 2 per file)."""
    present = np.fromiter((f is not None for f in files), bool, len(files))
    video_counts = np.zeros(len(files), np.int64)
    video_counts[present] = counts
    first_shape = (rows.shape[1],) if ndims[0] == 1 else (int(counts[0]), rows.shape[1])
    return AudioBank.from_rows(rows, np.concatenate([[0], np.cumsum(video_counts)]),
                               (listing.paths[0], first_shape))


def _build(folder: Path, name: str, listing: _Listing,
           files: Sequence[str | os.PathLike | None]) -> AudioBank:
    """Read and check every listed file, write the cache to `folder` and map it."""
    start = time.perf_counter()
    index_path = folder / f"{name}.index.npz"
    rows_file = f"{name}-{os.getpid()}-{secrets.token_hex(4)}.f32"
    previous = _rows_file_of(index_path)
    n = len(listing.paths)
    counts, ndims = np.empty(n, np.int64), np.empty(n, np.uint8)
    reference = None
    temporary = [folder / f"{rows_file}.tmp", folder / f"{rows_file}.index.tmp"]
    try:
        with open(temporary[0], "wb") as out:
            for i, path in enumerate(listing.paths):
                array = read_audio_array(path)
                if reference is None:
                    reference = (path, array.shape)
                elif array.shape[-1] != reference[1][-1]:
                    raise mixed_dim_error(path, array.shape, *reference)
                out.write(np.ascontiguousarray(array).data)
                counts[i], ndims[i] = (1 if array.ndim == 1 else len(array)), array.ndim
            out.flush()
            os.fsync(out.fileno())
        with open(temporary[1], "wb") as out:
            np.savez(out, format=FORMAT, names=np.frombuffer(listing.names, np.uint8),
                     stamps=listing.stamps, listed_ns=listing.listed_ns,
                     counts=counts, ndims=ndims, dim=reference[1][-1], rows_file=rows_file)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary[0], folder / rows_file)
        os.replace(temporary[1], index_path)
    finally:
        for path in temporary:
            path.unlink(missing_ok=True)
    if previous is not None and previous != rows_file:
        # Processes that mapped it keep their mapping; new readers follow the new index.
        (folder / previous).unlink(missing_ok=True)
    dim = reference[1][-1]
    rows = np.memmap(folder / rows_file, np.float32, "r", shape=(int(counts.sum()), dim))
    log.info("audio feature cache %s: %d files, %d rows of %d, built in %.1f s",
             folder / rows_file, n, len(rows), dim, time.perf_counter() - start)
    return _bank(rows, counts, ndims, listing, files)


def _rows_file_of(index_path: Path) -> str | None:
    try:
        with np.load(index_path) as index:
            return str(index["rows_file"])
    except Exception:
        return None
