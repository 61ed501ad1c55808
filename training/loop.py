"""Epoch loops: training (any teacher list) and clip-level validation (SPEC §4)."""
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from datasets.device_decode import clip_to_device
from datasets.loader import batches
from errors import TrainingStopped
from training.batch import to_device_batch
from training.distributed import all_reduce_sum, is_main_process
from training.objective import ccl_objective
from training.step import autocast_context, train_step
from training.teachers import Teacher

log = logging.getLogger("ccl")

# Summary entries measured in wall time: the only ones a resumed run does not reproduce.
TIMING_KEYS = ("clips_per_s", "data_wait")


@dataclass
class EpochSettings:
    mean: list[float]
    std: list[float]
    sample_duration: int
    loss_weight: float
    autocast_dtype: torch.dtype | None
    channels_last: bool
    seed: int
    max_bad_samples: int
    max_nonfinite_steps: int
    objective: Callable = ccl_objective   # torch.compile'd under --compile


def train_epoch(epoch: int, student: nn.Module, teachers: list[Teacher], loader,
                optimizers: list[torch.optim.Optimizer], settings: EpochSettings,
                device: torch.device) -> dict[str, float]:
    """One pass over `loader`; returns the epoch's mean loss terms, clip accuracy, counts,
    and its speed: `clips_per_s` (global batch sizes over this rank's wall time) and
    `data_wait` (the share of that time spent waiting for the loader; near 0 when the loader
    keeps up; more --n_threads when it does not).

    The image teacher's frame is drawn once per batch from a generator seeded by
    (seed, epoch), so every DDP rank and every resumed run draws the same frames.
    """
    student.train()
    for teacher in teachers:
        teacher.head.train()
    frames = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), device=device)
    count = skipped = consecutive_skipped = no_audio = 0
    bad: list[str] = []
    samples = Timed(batches(loader, f"train {epoch}", show=is_main_process()))
    start = time.perf_counter()
    for sample in samples:
        # Decoded here first under --gpu_decode: a clip the device cannot decode is a
        # replaced sample too.
        sample = clip_to_device(sample, device)
        if sample["bad"]:
            bad.extend(sample["bad"])
            for record in sample["bad"]:
                log.warning("unreadable sample replaced: %s", record)
            if len(bad) > settings.max_bad_samples:
                raise TrainingStopped(bad_samples_summary(bad, epoch, settings.max_bad_samples))
        frame_index = int(torch.randint(settings.sample_duration, (1,), generator=frames))
        batch = to_device_batch(sample, device, settings.mean, settings.std, frame_index, settings.channels_last)
        result = train_step(student, teachers, batch, optimizers, settings.loss_weight,
                            settings.autocast_dtype, settings.objective)
        no_audio += int((sample["audio_weight"] == 0).sum())
        if not result.finite:
            skipped += 1
            consecutive_skipped += 1
            log.warning("epoch %d: non-finite loss or gradient, step skipped", epoch)
            if consecutive_skipped >= settings.max_nonfinite_steps:
                raise TrainingStopped(f"{consecutive_skipped} consecutive non-finite steps in epoch {epoch} "
                                      f"(--max_nonfinite_steps {settings.max_nonfinite_steps}); the last "
                                      f"good checkpoint (save_last.pth) is kept: lower --learning_rate "
                                      f"or check the data, then --auto_resume")
            continue
        consecutive_skipped = 0
        for name, value in {"loss": result.loss, **result.terms}.items():
            sums[name] = sums.get(name, 0) + value * result.count
        correct += result.correct
        count += result.count
    # An epoch whose every step was skipped has no loss: NaN, rather than no column at all.
    summary = {"loss": math.nan} | {name: float(total) / max(count, 1) for name, total in sums.items()}
    summary["acc"] = float(correct) / max(count, 1)
    summary.update(skipped_steps=skipped, bad_samples=len(bad), samples_without_audio=no_audio)
    # train_step ends in a host sync, so the device's work is inside the wall time.
    elapsed = time.perf_counter() - start
    summary.update(zip(TIMING_KEYS, (count / elapsed, samples.waited / elapsed)))
    return summary


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


def validate(student: nn.Module, loader, settings: EpochSettings, device: torch.device,
             desc: str = "val") -> dict[str, float]:
    """Clip-level cross-entropy and accuracy over every validation clip (SPEC §4).

    Under DDP each clip is seen by exactly one rank (the sampler does not pad), and the
    sums are reduced over ranks.
    """
    student.eval()
    totals = torch.zeros(3, device=device, dtype=torch.float64)   # loss sum, correct, count
    with torch.inference_mode():
        for sample in batches(loader, desc, show=is_main_process()):
            batch = to_device_batch(sample, device, settings.mean, settings.std, 0, settings.channels_last)
            with autocast_context(device, settings.autocast_dtype):
                logits, _ = student(batch.clip)
            logits = logits.float()
            totals[0] += F.cross_entropy(logits, batch.target, reduction="sum")
            totals[1] += (logits.argmax(1) == batch.target).sum()
            totals[2] += batch.target.numel()
    totals = all_reduce_sum(totals)
    count = max(float(totals[2]), 1.0)
    return {"loss": float(totals[0]) / count, "acc": float(totals[1]) / count}
