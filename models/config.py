"""The networks of a run (SPEC §2), resolved once from the options (`opts.resolve`)."""
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelConfig:
    """The student: `name` (`--model`), its depth, its classes, and an
    optional local checkpoint of the same architecture to start from."""
    name: str
    depth: int
    n_classes: int
    pretrain_path: Path | None

    @property
    def arch(self) -> str:
        """The checkpoints' `arch` entry, e.g. `r21d-18` (the original's)."""
        return f"{self.name}-{self.depth}"


@dataclass(frozen=True)
class TeacherConfig:
    """Which teachers distil into the student (SPEC §3: none is the baseline).

    image_name: the torchvision classification model of the image teacher (`resnet34`: the
    paper's).
    image_size: the frame size the image teacher sees (resized when larger than the clip).
    image_weights: the image teacher's ImageNet state dict; None: torchvision's cache file.
    image_norm: "clip" (the frame as normalized for the student, the original's) or
    "imagenet" (re-normalized to the teacher's own ImageNet mean/std).
    allow_untrained: without weights, an untrained image teacher (demo and tests only).
    """
    audio: bool
    image: bool
    image_name: str
    image_size: int
    image_weights: Path | None
    image_norm: str
    allow_untrained: bool
