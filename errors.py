"""The ways a run ends early, and the exit code `main.py` gives each.

- `UserError` (exit 2): a mistake in the options or the data that the user can fix,
  found before the run builds anything. Its message is one line that names the option or
  file and the fix. It is a ValueError, so callers of library code that catch ValueError
  keep working; `MissingFileError` is also a FileNotFoundError.
- `RunStopped` (exit 1): a run that started and cannot go on (nothing readable left in
  the data, too many non-finite steps, a checkpoint that cannot be written). Its message
  is one line too.

Library code raises these where its message is for the user; `main.py` prints
`error: <message>` without a traceback.
"""


class UserError(ValueError):
    """A mistake in the options or the data; the message names it and the fix."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder that the options or the data name does not exist."""


class RunStopped(RuntimeError):
    """A run that started and cannot go on; the message says why in one line."""


class TrainingStopped(RunStopped):
    """The training cannot go on; the newest checkpoint on disk is complete. Reads
    `training stopped: <reason>`."""

    def __str__(self) -> str:
        return f"training stopped: {super().__str__()}"
