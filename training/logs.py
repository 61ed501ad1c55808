"""Epoch logs: tab-separated files (the original's train.log / val.log) and TensorBoard."""
import csv
import json
from pathlib import Path

from training.distributed import is_main_process


class EpochLog:
    """One tab-separated file, a header row then one row per epoch; appends on resume.

    Only rank 0 writes. Columns are fixed by the first row written.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.columns: list[str] | None = None
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, newline="") as f:
                self.columns = next(csv.reader(f, delimiter="\t"))

    def write(self, row: dict[str, float]) -> None:
        if not is_main_process():
            return
        if self.columns is None:
            self.columns = list(row)
            with open(self.path, "w", newline="") as f:
                csv.writer(f, delimiter="\t").writerow(self.columns)
        with open(self.path, "a", newline="") as f:
            csv.writer(f, delimiter="\t").writerow(
                [_format(row.get(c, "")) for c in self.columns])


def truncate_after(path: Path, epoch: int) -> None:
    """Drop rows of epochs > `epoch` (they belong to a run that is being resumed)."""
    path = Path(path)
    if not is_main_process() or not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) <= epoch]
    with open(path, "w", newline="") as f:
        csv.writer(f, delimiter="\t").writerows(kept)


def _format(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class TensorBoard:
    """SummaryWriter on rank 0; a no-op elsewhere or when disabled."""

    def __init__(self, result_path: Path, enabled: bool):
        self.writer = None
        if enabled and is_main_process():
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(log_dir=str(result_path))

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}/{name}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_options(path: Path, options: dict) -> None:
    """`options` as JSON at `path`, on rank 0: `opts.json` describes the training of the
    result folder; an evaluation-only run records its own in `eval_opts.json` beside it."""
    if not is_main_process():
        return
    Path(path).write_text(json.dumps(options, indent=2) + "\n")
