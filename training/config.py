"""What a training run does, resolved once from the options (`opts.resolve`)."""
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OptimConfig:
    """One SGD per module group with these settings, MultiStepLR (γ 0.1) at `milestones` on
    the student's (SPEC §4), and `loss_weight`, w of CCL (AI) (SPEC §3)."""
    learning_rate: float
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool
    milestones: tuple[int, ...]
    loss_weight: float


@dataclass(frozen=True)
class RunConfig:
    """The epochs, checkpoints, logs and devices of a run.

    train, validate: whether the run trains, and validates (every `val_freq` epochs).
    checkpoint_every: `save_<epoch>.pth` every this many epochs (`save_last.pth` every epoch).
    resume_path: the checkpoint to resume (training) or evaluate; None: a fresh start.
    resume_option: the option that named it (`--resume_path` or `--auto_resume`), for messages.
    allow_changed_options: resume with training options other than the checkpoint's.
    seed: every random draw of the run derives from it.
    max_nonfinite_steps: consecutive skipped steps that stop the run.
    max_bad_samples: unreadable samples per epoch that stop the run; None: 1% of an epoch.
    no_cuda, distributed, exact, compile: the device, DDP under torchrun, the original's
        fp32 arithmetic, torch.compile.
    options: every option as opts.json and checkpoints record it (`training.run_options`).
    """
    result_path: Path
    train: bool
    validate: bool
    n_epochs: int
    val_freq: int
    checkpoint_every: int
    resume_path: Path | None
    resume_option: str
    allow_changed_options: bool
    seed: int
    max_nonfinite_steps: int
    max_bad_samples: int | None
    tensorboard: bool
    no_cuda: bool
    distributed: bool
    exact: bool
    compile: bool
    options: dict
