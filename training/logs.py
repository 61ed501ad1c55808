"""Epoch logs: tab-separated files (the original's train.log / val.log), TensorBoard and
run.log lines."""
import csv
import io
import json
import logging
from pathlib import Path

from training.distributed import is_main_process
from training.files import write_atomically

log = logging.getLogger("ccl")

# train.log columns measured in wall time: the only ones a resumed run does not reproduce.
TIMING_KEYS = ("clips_per_s", "data_wait")


class RunLogs:
    """train.log, val.log and TensorBoard of a run that starts at epoch `first_epoch`: the
    rows of that epoch and later ones (left by the run being resumed) are dropped first."""

    def __init__(self, result_path: Path, tensorboard: bool, first_epoch: int):
        self.train_log = EpochLog(result_path / "train.log")
        self.val_log = EpochLog(result_path / "val.log")
        for epoch_log in (self.train_log, self.val_log):
            truncate_after(epoch_log.path, first_epoch - 1)
        self.board = TensorBoard(result_path, tensorboard)

    def train(self, epoch: int, lr: float, summary: dict[str, float]) -> None:
        """One train.log row: `epoch`, `loss`, `acc`, `lr`, then the rest of the epoch's
        summary in its order (loss terms, counts, speed)."""
        row = {"epoch": epoch, "loss": summary["loss"], "acc": summary["acc"], "lr": lr}
        row.update((name, value) for name, value in summary.items() if name not in row)
        self._write(self.train_log, "train", row)

    def val(self, epoch: int, metrics: dict[str, float]) -> None:
        """One val.log row: `epoch`, `loss`, `acc`."""
        self._write(self.val_log, "val", {"epoch": epoch, **metrics})

    def _write(self, epoch_log: "EpochLog", name: str, row: dict) -> None:
        epoch_log.write(row)
        values = {k: v for k, v in row.items() if k != "epoch"}
        self.board.scalars(name, values, row["epoch"])
        log.info("epoch %d %s: %s", row["epoch"], name, " ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()))

    def close(self) -> None:
        self.board.close()


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
    text = io.StringIO(newline="")
    csv.writer(text, delimiter="\t").writerows(kept)
    write_atomically(path, text.getvalue().encode())


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
    result folder; an evaluation-only run records its own in `eval_opts.json` beside it.
    Written atomically: a failed write leaves the earlier file as it was."""
    if not is_main_process():
        return
    write_atomically(Path(path), (json.dumps(options, indent=2) + "\n").encode())
