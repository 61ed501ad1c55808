"""Writing a result file so that it is always complete: the new content, or the old one."""
import os
from pathlib import Path


def write_atomically(path: Path, data: bytes | memoryview) -> None:
    """`data` at `path`: written to `<path>.<pid>.tmp`, synced to disk, then renamed over
    `path`. A failure (disk full, permissions, kill) leaves the file that was at `path` as it
    was; an OSError naming `path` is raised after the temporary file is removed. The temporary
    name is this process's own, so no other process writes into it."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        # A failed write names no file and a failed rename the temporary one: name the file
        # the caller asked for.
        raise OSError(e.errno, e.strerror, str(path)) from e
