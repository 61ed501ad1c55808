"""Teachers as data: the four CCL configurations differ only in this list (SPEC §3)."""
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from errors import UserError
from models.composition import STUDENT_DIM, CompositionClassifier, composition_head
from models.image_teacher import renormalize, resize_frame
from models.torchvision_classifiers import imagenet_mean_std
from training.batch import Batch

AUDIO_TEMPERATURE = 0.5
IMAGE_TEMPERATURE = 0.1


@dataclass
class Teacher:
    """One distillation branch of SPEC §3."""
    name: str                                         # "audio" | "image"
    head: CompositionClassifier
    temperature: float
    features: Callable[[Batch], tuple[Tensor, Tensor | None]]  # -> (t (B, D), weight (B,) | None)


@dataclass(frozen=True)
class FrameNorm:
    """`--image_teacher_norm imagenet`: the clip's normalization (`clip_*`) re-expressed in
    the image teacher's own (`teacher_*`, its ImageNet weights' mean/std)."""
    clip_mean: list[float]
    clip_std: list[float]
    teacher_mean: list[float]
    teacher_std: list[float]

    def __call__(self, frame: Tensor) -> Tensor:
        """frames (N, 3, H, W) normalized as the clip → the same in the teacher's normalization."""
        return renormalize(frame, self.clip_mean, self.clip_std, self.teacher_mean, self.teacher_std)


def make_frame_norm(norm: str, teacher_name: str, clip_mean, clip_std) -> FrameNorm | None:
    """`--image_teacher_norm`: "clip" (None: the frame as normalized for the student, what
    the original fed its teacher) or "imagenet" (re-normalized to the teacher's weights')."""
    if norm == "clip":
        return None
    if norm != "imagenet":
        raise UserError(f"--image_teacher_norm {norm!r}: choose clip or imagenet")
    return FrameNorm(list(clip_mean), list(clip_std), *imagenet_mean_std(teacher_name))


def audio_features(batch: Batch) -> tuple[Tensor, Tensor]:
    """Precomputed audio embeddings (B, D); samples without audio get weight 0 (SPEC §1)."""
    return batch.audio, batch.audio_weight


def as_teacher_sees(frames: Tensor, image_size: int, frame_norm: FrameNorm | None) -> Tensor:
    """Frames (N, 3, H, W) of the normalized clip as the image teacher sees them: resized to
    image_size when larger (`resize_frame`), re-normalized with `frame_norm` when given, as
    they are otherwise (what the original fed its teacher)."""
    frames = resize_frame(frames, image_size)
    return frame_norm(frames) if frame_norm is not None else frames


def image_features(network: nn.Module, image_size: int,
                   frame_norm: FrameNorm | None = None) -> Callable[[Batch], tuple[Tensor, None]]:
    """Image-teacher features (B, D) of one frame of the augmented clip (`batch.frame_index`),
    without gradients (SPEC §2)."""
    def features(batch: Batch) -> tuple[Tensor, None]:
        with torch.no_grad():
            return network(as_teacher_sees(batch.clip[:, :, batch.frame_index], image_size, frame_norm)), None
    return features


def build_teachers(n_classes: int, device: torch.device, *, audio: bool, image: nn.Module | None,
                   image_size: int = 112, audio_dim: int = STUDENT_DIM, image_dim: int = STUDENT_DIM,
                   frame_norm: FrameNorm | None = None) -> list[Teacher]:
    """The teacher list of a configuration: [] (baseline), audio, image, or both.

    audio: distil from the audio features (CCL (A)). image: the frozen image-teacher
    network (CCL (I)), None for none; it sees frames of `image_size` (`as_teacher_sees`).
    audio_dim / image_dim: D of each teacher's features (by default the student's 512, as
    the paper's PANNs embedding and ResNet-34); each head is built for its D
    (`models.composition`).
    """
    teachers = []
    if audio:
        teachers.append(Teacher("audio", composition_head(audio_dim, n_classes).to(device),
                                AUDIO_TEMPERATURE, audio_features))
    if image is not None:
        teachers.append(Teacher("image", composition_head(image_dim, n_classes).to(device), IMAGE_TEMPERATURE,
                                image_features(image.to(device), image_size, frame_norm)))
    return teachers


def heads(teachers: list[Teacher]) -> nn.ModuleDict:
    return nn.ModuleDict({t.name: t.head for t in teachers})
