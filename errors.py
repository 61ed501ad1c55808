"""The ways a run ends early, and the exit code `main.py` gives each.

- `UserError` (exit 2): a mistake in the options or the data that the user can fix,
  found before the run builds anything. Its message is one line that names the option or
  file and the fix. It is a ValueError, so callers of library code that catch ValueError
  keep working; `MissingFileError` is also a FileNotFoundError.
- `RunStopped` (exit 1): a run that started and cannot go on (nothing readable left in
  the data, too many non-finite steps, a checkpoint that cannot be written). Its message
  is one line too.
- `Terminated` (exit 143): SIGTERM, answered as Ctrl-C (exit 130) is, with one line.

Library code raises these where its message is for the user; `main.py` prints
`error: <message>` without a traceback. `ArgumentParser` and the argparse types below give
command-line mistakes the same one line.
"""
import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn


class UserError(ValueError):
    """A mistake in the options or the data; the message names it and the fix."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder that the options or the data name does not exist."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, which `main.py` answers as it answers Ctrl-C (exit 143 instead of 130). A
    KeyboardInterrupt, so that everything that stops quietly on Ctrl-C (loader workers,
    progress bars) stops quietly on it too."""


class RunStopped(RuntimeError):
    """A run that started and cannot go on; the message says why in one line."""


class TrainingStopped(RunStopped):
    """The training cannot go on; the newest checkpoint on disk is complete. Reads
    `training stopped: <reason>`."""

    def __str__(self) -> str:
        return f"training stopped: {super().__str__()}"


def require_file(path: str | Path, option: str, expected: str, fix: str = "") -> None:
    """`path`, named by `option` (`--pretrain_path`; "" for a path that is not an option's),
    must be a file: MissingFileError `<option> <path> does not exist<fix>` when nothing is
    there, UserError saying what is there instead (a folder) and asking for `expected`
    ("a checkpoint file")."""
    path = Path(path)
    if path.is_file():
        return
    named = f"{option} {path}".strip()
    if not path.exists():
        raise MissingFileError(f"{named} does not exist{fix}")
    found = "a folder, not a file" if path.is_dir() else "not a regular file"
    raise UserError(f"{named} is {found}: pass {expected}")


def require_folder(path: str | Path, option: str, expected: str, fix: str = "") -> None:
    """`path`, named by `option` (`--video_path`), must be a folder: MissingFileError
    `<option> <path> does not exist<fix>` when nothing is there, UserError saying that it is
    a file and asking for `expected` ("the folder of the audio features")."""
    path = Path(path)
    if path.is_dir():
        return
    named = f"{option} {path}".strip()
    if not path.exists():
        raise MissingFileError(f"{named} does not exist{fix}")
    raise UserError(f"{named} is a file, not a folder: pass {expected}")


def exit_with_error(message: str) -> NoReturn:
    """A command-line tool's end on a user's mistake: `error: <message>` on stderr, exit 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose mistakes read like every other: one `error: ...` line naming
    the option, then exit 2 (argparse would print its whole usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def at_least(low: int) -> Callable[[str], int]:
    """argparse type: an integer ≥ `low` (sizes, counts, frequencies)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more, got {value}")
        return value
    parse.__name__ = "int"   # argparse names the type in its "invalid int value" message
    return parse


def fraction(text: str) -> float:
    """argparse type: a number in (0, 1] (crop scale and aspect-ratio bounds)."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number ≥ 0 (learning rate, momentum, weight decay, loss
    weight); inf would make every step non-finite."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value
