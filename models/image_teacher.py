"""Frozen ImageNet ResNet-34 image teacher of SPEC §2, and the frame it is shown.

Weights are never downloaded: `load_image_teacher` reads a given file or torchvision's own
cache. An untrained ResNet-34 in eval mode overflows to inf/NaN (BatchNorm running
statistics at their initial values), so the untrained fallback (demo, tests) calibrates
its BatchNorm statistics first.
"""
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import ResNet34_Weights
from torchvision.models.resnet import BasicBlock, ResNet

from errors import MissingFileError, UserError
from models.factory import read_state_dict

FEATURE_DIM = 512
CALIBRATION_SHAPE = (16, 3, 64, 64)


class ImageTeacher(ResNet):
    """torchvision ResNet-34 with `fc = Identity`, frozen and always in eval mode.

    State-dict names are torchvision's (without `fc.*`). forward: frames (B, 3, H, W),
    ImageNet-normalized → features t (B, 512), computed without autograd.
    """

    def __init__(self):
        super().__init__(BasicBlock, [3, 4, 6, 3])
        self.fc = nn.Identity()
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "ImageTeacher":
        """Ignore `mode`: the student's `.train()` must not switch the teacher's BatchNorm to
        batch statistics."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, frames: Tensor) -> Tensor:
        return super().forward(frames)


def default_weights_path() -> Path:
    """Where torchvision caches the IMAGENET1K_V1 ResNet-34 file (what `pretrained=True`
    loaded in the original release)."""
    file_name = Path(ResNet34_Weights.IMAGENET1K_V1.url).name
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


@torch.no_grad()
def calibrate_batchnorm(teacher: ImageTeacher, frames: Tensor, batch_size: int = 64) -> ImageTeacher:
    """Set every BatchNorm's running statistics to the cumulative average of batch
    statistics over `frames` (N, 3, H, W), then return to eval mode.

    Only for teachers without real weights: it makes eval-mode features finite and O(1).
    """
    norms = [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        nn.Module.train(m, True)
    try:
        for chunk in frames.split(batch_size):
            teacher(chunk)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        teacher.eval()
    return teacher


def load_image_teacher(weights_path: str | None, allow_untrained: bool = False) -> ImageTeacher:
    """The image teacher with ImageNet weights from `weights_path` (a torchvision resnet34
    state dict; `fc.*` dropped) or, when None, from torchvision's cache; never downloads.

    allow_untrained: demo/tests only. With no weights found, warn and return a randomly
    initialised teacher whose BatchNorm is calibrated on fixed Gaussian frames
    (`calibrate_batchnorm` can recalibrate on real frames).
    """
    path = Path(weights_path) if weights_path is not None else default_weights_path()
    teacher = ImageTeacher()
    if weights_path is not None or path.is_file():
        state = read_state_dict(path, "--image_teacher_weights")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            teacher.load_state_dict(state)
        except RuntimeError as e:
            detail = " ".join(str(e).split())[:300]
            raise UserError(f"--image_teacher_weights {path} is not a torchvision resnet34 "
                            f"state dict ({detail})") from e
        return teacher
    if not allow_untrained:
        raise MissingFileError(
            f"ImageNet ResNet-34 weights not found: put {path.name} (from "
            f"{ResNet34_Weights.IMAGENET1K_V1.url}) at {path} or pass --image_teacher_weights FILE")
    warnings.warn("IMAGE TEACHER IS UNTRAINED (random ResNet-34, BatchNorm calibrated on noise): "
                  "its features are meaningless; use only for demos and tests", stacklevel=2)
    generator = torch.Generator().manual_seed(0)
    return calibrate_batchnorm(teacher, torch.randn(CALIBRATION_SHAPE, generator=generator))


def pick_frame(clip: Tensor, index: int, image_size: int) -> Tensor:
    """Frame `index` of a normalized clip (B, 3, T, H, W) as an image batch (B, 3, H, W).

    When image_size > H it is resized to (B, 3, image_size, image_size) over H and W
    (bilinear, align_corners=False); the original resized the wrong axis (SPEC §2).
    """
    frame = clip[:, :, index]
    if image_size > clip.shape[-2]:
        frame = F.interpolate(frame, size=(image_size, image_size), mode="bilinear",
                              align_corners=False)
    return frame
