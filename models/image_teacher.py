"""Frozen ImageNet image teachers of SPEC §2, and the frame they are shown.

`resnet34` (the paper's) is `ImageTeacher`, with torchvision's ResNet-34 parameter names;
any other supported torchvision classifier (`models.torchvision_classifiers`) is a
`TorchvisionImageTeacher` holding it as `network`. Both are frozen, always in eval mode, run
without autograd and expose `feature_dim` (D, read off the replaced classifier).

Weights are never downloaded: `load_image_teacher` reads a given file or torchvision's own
cache file. An untrained network with BatchNorm in eval mode overflows to inf/NaN (running
statistics at their initial values), so the untrained fallback (demo, tests) calibrates
its BatchNorm statistics first.
"""
import itertools
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torchvision.models.resnet import BasicBlock, ResNet

from errors import MissingFileError, UserError
from models.factory import read_state_dict
from models.torchvision_classifiers import (build_without_classifier, cached_weights_path,
                                            default_weights, weights_url)

DEFAULT_TEACHER = "resnet34"
CALIBRATION_SIZE = 64
CALIBRATION_FRAMES = 16


class ImageTeacher(ResNet):
    """torchvision ResNet-34 with `fc = Identity`, frozen and always in eval mode.

    State-dict names are torchvision's (without `fc.*`). forward: frames (B, 3, H, W),
    normalized → features t (B, 512), computed without autograd.
    """
    classifier_path = "fc"

    def __init__(self):
        super().__init__(BasicBlock, [3, 4, 6, 3])
        self.feature_dim = self.fc.in_features   # D, read off the classifier it replaces
        self.fc = nn.Identity()
        self.requires_grad_(False)
        self.eval()

    def torchvision_network(self) -> nn.Module:
        """The module whose state-dict names are torchvision's."""
        return self

    def train(self, mode: bool = True) -> "ImageTeacher":
        """Ignore `mode`: the student's `.train()` must not switch the teacher's BatchNorm to
        batch statistics."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, frames: Tensor) -> Tensor:
        return super().forward(frames)


class TorchvisionImageTeacher(nn.Module):
    """torchvision classification model `name` with its classifier replaced by Identity,
    frozen and always in eval mode.

    forward: frames (B, 3, H, W) → pooled features t (B, feature_dim), without autograd.
    State-dict names are torchvision's under `network.`.
    """

    def __init__(self, name: str):
        super().__init__()
        self.network, self.classifier_path, self.feature_dim = build_without_classifier(name)
        self.requires_grad_(False)
        self.eval()

    def torchvision_network(self) -> nn.Module:
        return self.network

    def train(self, mode: bool = True) -> "TorchvisionImageTeacher":
        """Ignore `mode` (see `ImageTeacher.train`)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, frames: Tensor) -> Tensor:
        return self.network(frames)


def build_image_teacher(name: str = DEFAULT_TEACHER) -> ImageTeacher | TorchvisionImageTeacher:
    """The untrained teacher `name` (random weights, BatchNorm statistics at their start)."""
    return ImageTeacher() if name == DEFAULT_TEACHER else TorchvisionImageTeacher(name)


def default_weights_path(name: str = DEFAULT_TEACHER) -> Path:
    """Where torchvision caches the default ImageNet weights of `name` (for resnet34 its
    IMAGENET1K_V1 file, what `pretrained=True` loaded in the original release)."""
    return cached_weights_path(name)


def missing_weights_message(name: str, path: Path) -> str:
    """One line: which file is missing, where torchvision publishes it, and the option."""
    return (f"ImageNet {name} weights not found: put {path.name} (from {weights_url(name)}) at {path} "
            f"or pass --image_teacher_weights FILE")


def check_frame_size(teacher: nn.Module, name: str, size: int) -> None:
    """UserError (one line) when `teacher` cannot take size×size frames (ViT's fixed 224,
    MaxViT's multiples of its windows...). Checked on the meta device: nothing is computed."""
    meta = {key: torch.empty_like(value, device="meta")
            for key, value in itertools.chain(teacher.named_parameters(), teacher.named_buffers())}
    try:
        functional_call(teacher, meta, (torch.empty(1, 3, size, size, device="meta"),))
    except Exception as e:   # noqa: BLE001 - whatever the network's own shape checks raise
        reason = " ".join(str(e).split())[:200]
        crop = default_weights(name).transforms().crop_size[0]
        raise UserError(f"--image_teacher {name} does not take {size}×{size} frames ({reason}); pass "
                         f"--image_size {crop}, its ImageNet size, and --sample_size at most {crop} "
                         f"(frames are resized up to --image_size, never down)") from None


@torch.no_grad()
def calibrate_batchnorm(teacher: nn.Module, frames: Tensor, batch_size: int = 64) -> nn.Module:
    """Set every BatchNorm's running statistics to the cumulative average of batch
    statistics over `frames` (N, 3, H, W), then return to eval mode. A teacher without
    BatchNorm is returned as it is.

    Only for teachers without real weights: it makes eval-mode features finite and O(1).
    """
    norms = [m for m in teacher.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return teacher
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


def load_image_teacher(weights_path: str | Path | None, allow_untrained: bool = False,
                       name: str = DEFAULT_TEACHER, frame_size: int | None = None) -> nn.Module:
    """The image teacher `name` with ImageNet weights from `weights_path` (a torchvision
    state dict of that model; its classifier's keys dropped, every other key loaded
    strictly) or, when None, from torchvision's cache; never downloads.

    frame_size: the side of the frames it will see; a network that cannot take them is a
    UserError before any weights are read.
    allow_untrained: demo/tests only. With no weights found, warn and return a randomly
    initialised teacher whose BatchNorm (if any) is calibrated on fixed Gaussian frames
    (`calibrate_batchnorm` can recalibrate on real frames).
    """
    path = Path(weights_path) if weights_path is not None else default_weights_path(name)
    teacher = build_image_teacher(name)
    if frame_size is not None:
        check_frame_size(teacher, name, frame_size)
    if weights_path is not None or path.is_file():
        classifier = teacher.classifier_path + "."
        state = read_state_dict(path, "--image_teacher_weights")
        state = {k: v for k, v in state.items() if not k.startswith(classifier)}
        try:
            teacher.torchvision_network().load_state_dict(state)
        except RuntimeError as e:
            detail = " ".join(str(e).split())[:300]
            raise UserError(f"--image_teacher_weights {path} is not a torchvision {name} "
                            f"state dict ({detail})") from e
        return teacher
    if not allow_untrained:
        raise MissingFileError(missing_weights_message(name, path))
    warnings.warn(f"IMAGE TEACHER IS UNTRAINED (random {name}, BatchNorm calibrated on noise): "
                  "its features are meaningless; use only for demos and tests", stacklevel=2)
    size = frame_size or CALIBRATION_SIZE
    generator = torch.Generator().manual_seed(0)
    return calibrate_batchnorm(teacher, torch.randn(CALIBRATION_FRAMES, 3, size, size, generator=generator))


def teacher_frame_size(image_size: int, sample_size: int) -> int:
    """The side of the frame `pick_frame` gives for clips of side `sample_size`."""
    return max(image_size, sample_size)


def pick_frame(clip: Tensor, index: int, image_size: int) -> Tensor:
    """Frame `index` of a normalized clip (B, 3, T, H, W) as an image batch (B, 3, H, W).

    When image_size > H it is resized to (B, 3, image_size, image_size) over H and W
    (bilinear, align_corners=False); the original resized the wrong axis (SPEC §2).
    """
    return resize_frame(clip[:, :, index], image_size)


def resize_frame(frame: Tensor, image_size: int) -> Tensor:
    """Frames (N, 3, H, W) resized to (N, 3, image_size, image_size) when image_size > H
    (bilinear, align_corners=False), as they are otherwise."""
    if image_size > frame.shape[-2]:
        frame = F.interpolate(frame, size=(image_size, image_size), mode="bilinear",
                              align_corners=False)
    return frame


def renormalize(frame: Tensor, from_mean, from_std, to_mean, to_std) -> Tensor:
    """Re-express frames normalized per channel as x = (p − μ_from)/σ_from in another
    normalization: x' = (p − μ_to)/σ_to = (x·σ_from + μ_from − μ_to)/σ_to.

    frame: (B, 3, H, W); the four statistics: 3 values each (pixel values in [0, 1]).
    Used for `--image_teacher_norm imagenet`: from the clip's mean/std to the teacher's.
    """
    def channels(values) -> Tensor:
        return torch.as_tensor(values, dtype=frame.dtype, device=frame.device)[:, None, None]
    pixels = frame * channels(from_std) + channels(from_mean)
    return (pixels - channels(to_mean)) / channels(to_std)
