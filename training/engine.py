"""The training loop of SPEC §4. `Engine.fit` runs the epochs, top to bottom: train, step
the schedule, validate, log, save. `Engine.train_epoch` runs one epoch of `train_step`s;
`validate` is the clip-level validation; `Engine.validate_only` validates without training.
"""
import logging
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from datasets.config import DataConfig
from datasets.device_decode import clip_to_device
from datasets.loader import batches
from errors import TrainingStopped
from training.batch import to_device_batch
from training.checkpoint import save_checkpoint
from training.config import OptimConfig, RunConfig
from training.distributed import all_reduce_sum, is_main_process, rank
from training.logs import TIMING_KEYS, RunLogs
from training.objective import ccl_objective
from training.state import TrainingState, checkpoint_of
from training.precision import SpeedMode, autocast_context, speed_mode
from training.step import train_step

log = logging.getLogger("ccl")


class Engine:
    """Trains `state` as the configs say, on `device`.

    The student runs in the device's speed mode (`training.precision.speed_mode`: bf16 autocast
    and channels_last_3d on CUDA unless `--exact`); the objective is torch.compile'd under
    `--compile`.
    """

    def __init__(self, state: TrainingState, data: DataConfig, optim: OptimConfig, run: RunConfig,
                 device: torch.device):
        self.state, self.data, self.optim, self.run, self.device = state, data, optim, run, device
        self.mode = speed_mode(device, run.exact)
        self.objective = torch.compile(ccl_objective) if run.compile else ccl_objective

    def fit(self, train_loader, val_loader=None) -> None:
        """Epochs `start_epoch`..`n_epochs`: train, step the scheduler, validate every
        `val_freq` epochs, keep `save_model.pth` (best clip accuracy), `save_<epoch>.pth`
        every `checkpoint_every` epochs and `save_last.pth` every epoch (for --auto_resume)."""
        state, run = self.state, self.run
        if state.start_epoch > run.n_epochs:
            # A rerun of a finished run (the scripts resume with --auto_resume) goes on to the
            # evaluation; a checkpoint beyond --n_epochs is worth a warning.
            level = logging.INFO if state.start_epoch == run.n_epochs + 1 else logging.WARNING
            log.log(level, "nothing to train: the resumed checkpoint is at epoch %d, --n_epochs is %d",
                    state.start_epoch - 1, run.n_epochs)
        logs = RunLogs(run.result_path, run.tensorboard, first_epoch=state.start_epoch)
        try:
            for epoch in range(state.start_epoch, run.n_epochs + 1):
                lr = state.optimizers["student"].param_groups[0]["lr"]
                seed_epoch(train_loader, run.seed, epoch)
                summary = self.train_epoch(epoch, train_loader)
                state.scheduler.step()
                logs.train(epoch, lr, summary)
                if val_loader is not None and epoch % run.val_freq == 0:
                    metrics = self.validate(val_loader)
                    logs.val(epoch, metrics)
                    if metrics["acc"] > state.best_acc:
                        state.best_acc = metrics["acc"]
                        self.save("save_model", epoch)
                if epoch % run.checkpoint_every == 0:
                    self.save(f"save_{epoch}", epoch)
                self.save("save_last", epoch)
        finally:
            logs.close()

    def validate_only(self, val_loader) -> dict[str, float]:
        """The student's clip-level validation (a checkpoint evaluated without training):
        logged, and kept as the run's best accuracy; no log file or checkpoint is written."""
        metrics = self.validate(val_loader)
        log.info("val: loss %.4f acc %.4f", metrics["loss"], metrics["acc"])
        self.state.best_acc = metrics["acc"]
        return metrics

    def train_epoch(self, epoch: int, loader) -> dict[str, float]:
        """One pass over `loader`; returns the epoch's mean loss terms, clip accuracy, counts,
        and its speed: `clips_per_s` (global batch sizes over this rank's wall time) and
        `data_wait` (the share of that time spent waiting for the loader; near 0 when the
        loader keeps up; more --n_threads when it does not).

        A non-finite step is skipped (`train_step`); `max_nonfinite_steps` of them in a row,
        or more than `max_bad_samples` unreadable samples in the epoch, stop the run. The
        image teacher's frame is drawn once per batch from a generator seeded by (seed,
        epoch), so every DDP rank and every resumed run draws the same frames.
        """
        state, run = self.state, self.run
        max_bad = run.max_bad_samples if run.max_bad_samples is not None else max(1, len(loader.dataset) // 100)
        state.student.train()
        for teacher in state.teachers:
            teacher.head.train()
        optimizers = list(state.optimizers.values())
        frames = torch.Generator().manual_seed(run.seed * 1_000_003 + epoch)
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), device=self.device)
        count = skipped = consecutive_skipped = no_audio = 0
        bad: list[str] = []
        samples = Timed(batches(loader, f"train {epoch}", show=is_main_process()))
        start = time.perf_counter()
        for sample in samples:
            # Decoded here first under --gpu_decode: a clip the device cannot decode is a
            # replaced sample too.
            sample = clip_to_device(sample, self.device)
            if sample["bad"]:
                bad.extend(sample["bad"])
                for record in sample["bad"]:
                    log.warning("unreadable sample replaced: %s", record)
                if len(bad) > max_bad:
                    raise TrainingStopped(bad_samples_summary(bad, epoch, max_bad))
            frame_index = int(torch.randint(self.data.sample_duration, (1,), generator=frames))
            batch = to_device_batch(sample, self.device, self.data.mean, self.data.std, frame_index,
                                    self.mode.channels_last)
            result = train_step(state.student, state.teachers, batch, optimizers, self.optim.loss_weight,
                                self.mode.autocast_dtype, self.objective)
            no_audio += int((sample["audio_weight"] == 0).sum())
            if not result.finite:
                skipped += 1
                consecutive_skipped += 1
                log.warning("epoch %d: non-finite loss or gradient, step skipped", epoch)
                if consecutive_skipped >= run.max_nonfinite_steps:
                    raise TrainingStopped(f"{consecutive_skipped} consecutive non-finite steps in epoch {epoch} "
                                          f"(--max_nonfinite_steps {run.max_nonfinite_steps}); the last good "
                                          f"checkpoint (save_last.pth) is kept: lower --learning_rate or check "
                                          f"the data, then --auto_resume")
                continue
            consecutive_skipped = 0
            for name, value in {"loss": result.loss, **result.terms}.items():
                sums[name] = sums.get(name, 0) + value * result.count
            correct += result.correct
            count += result.count
        # An epoch whose every step was skipped has no loss: NaN, rather than no column at all.
        summary = {"loss": math.nan} | {name: float(total) / max(count, 1) for name, total in sums.items()}
        summary["acc"] = float(correct) / max(count, 1)
        # Each rank saw its own share of the epoch's samples; the loss terms are already global.
        no_audio, n_bad = all_reduce_sum(torch.tensor([no_audio, len(bad)], device=self.device)).tolist()
        summary.update(skipped_steps=skipped, bad_samples=n_bad, samples_without_audio=no_audio)
        # train_step ends in a host sync, so the device's work is inside the wall time.
        elapsed = time.perf_counter() - start
        summary.update(zip(TIMING_KEYS, (count / elapsed, samples.waited / elapsed)))
        return summary

    def validate(self, loader) -> dict[str, float]:
        return validate(self.state.student, loader, self.device, self.data.mean, self.data.std, self.mode)

    def save(self, name: str, epoch: int) -> None:
        """`<name>.pth` (and the original's `<name>_<teacher>.pth`), written by rank 0."""
        if is_main_process():
            save_checkpoint(checkpoint_of(self.state, epoch), self.run.result_path, name)


def validate(student: nn.Module, loader, device: torch.device, mean, std, mode: SpeedMode) -> dict[str, float]:
    """Clip-level cross-entropy and accuracy over every validation clip (SPEC §4), the clips
    normalized with `mean`, `std` and run in `mode`. An unreadable clip, replaced by the
    dataset with another, is recorded in run.log as in training.

    Under DDP each clip is seen by exactly one rank (the sampler does not pad), and the
    sums are reduced over ranks.
    """
    student.eval()
    totals = torch.zeros(3, device=device, dtype=torch.float64)   # loss sum, correct, count
    with torch.inference_mode():
        for sample in batches(loader, "val", show=is_main_process()):
            batch = to_device_batch(sample, device, mean, std, 0, mode.channels_last)
            for record in sample["bad"]:
                log.warning("unreadable sample replaced: %s", record)
            with autocast_context(device, mode.autocast_dtype):
                logits, _ = student(batch.clip)
            logits = logits.float()
            totals[0] += F.cross_entropy(logits, batch.target, reduction="sum")
            totals[1] += (logits.argmax(1) == batch.target).sum()
            totals[2] += batch.target.numel()
    totals = all_reduce_sum(totals)
    count = max(float(totals[2]), 1.0)
    return {"loss": float(totals[0]) / count, "acc": float(totals[1]) / count}


def seed_epoch(loader, seed: int, epoch: int) -> None:
    """Make epoch `epoch` depend only on (seed, epoch): identical after a resume.

    The training sampler's shuffle and its items' augmentation seeds follow the epoch
    (datasets.build_loader), and the training process's own randomness is re-seeded; ranks
    get different streams."""
    torch.manual_seed(seed + epoch + 100_003 * rank())
    loader.sampler.set_epoch(epoch)


class Timed:
    """Iterates `items`, adding up in `waited` the seconds spent waiting for each next one."""

    def __init__(self, items) -> None:
        self.items, self.waited = items, 0.0

    def __iter__(self):
        iterator = iter(self.items)
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                self.waited += time.perf_counter() - start
            yield item


def bad_samples_summary(bad: list[str], epoch: int, limit: int) -> str:
    """One line naming the unreadable files (records are `"<file>: <reason>"`)."""
    files = list(dict.fromkeys(record.split(": ", 1)[0] for record in bad))
    more = f" and {len(files) - 5} more" if len(files) > 5 else ""
    return (f"{len(bad)} unreadable samples in epoch {epoch}, more than --max_bad_samples {limit}; "
            f"files: {', '.join(files[:5])}{more} (first: {bad[0]}); "
            f"re-convert or remove them, or raise --max_bad_samples")
