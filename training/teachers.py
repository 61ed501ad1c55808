"""Teachers as data: the four CCL configurations differ only in this list (SPEC §3)."""
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from models.composition import CompositionClassifier
from models.image_teacher import ImageTeacher, pick_frame
from training.batch import Batch

AUDIO_TEMPERATURE = 0.5
IMAGE_TEMPERATURE = 0.1


@dataclass
class Teacher:
    """One distillation branch of SPEC §3."""
    name: str                                         # "audio" | "image"
    head: CompositionClassifier
    temperature: float
    features: Callable[[Batch], tuple[Tensor, Tensor | None]]  # -> (t (B, 512), weight (B,) | None)


def audio_features(batch: Batch) -> tuple[Tensor, Tensor]:
    """Precomputed PANNs embeddings; samples without audio get weight 0 (SPEC §1)."""
    return batch.audio, batch.audio_weight


def image_features(network: ImageTeacher, image_size: int) -> Callable[[Batch], tuple[Tensor, None]]:
    """ResNet-34 features of one frame of the augmented clip, without gradients (SPEC §2)."""
    def features(batch: Batch) -> tuple[Tensor, None]:
        with torch.no_grad():
            frame = pick_frame(batch.clip, batch.frame_index, image_size)
            return network(frame), None
    return features


def build_teachers(use_audio: bool, use_image: bool, n_classes: int,
                   image_network: ImageTeacher | None, image_size: int,
                   device: torch.device) -> list[Teacher]:
    """The teacher list of a configuration: [] (baseline), audio, image, or both."""
    teachers = []
    if use_audio:
        teachers.append(Teacher("audio", CompositionClassifier(1024, n_classes).to(device),
                                AUDIO_TEMPERATURE, audio_features))
    if use_image:
        if image_network is None:
            raise ValueError("--use_image needs an image teacher network")
        teachers.append(Teacher("image", CompositionClassifier(1024, n_classes).to(device),
                                IMAGE_TEMPERATURE, image_features(image_network.to(device), image_size)))
    return teachers


def heads(teachers: list[Teacher]) -> nn.ModuleDict:
    return nn.ModuleDict({t.name: t.head for t in teachers})
