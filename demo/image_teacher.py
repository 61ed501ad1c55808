"""The demo's image teacher: a torchvision ResNet-18 that learned the textures elsewhere.

The paper's image teacher knows what objects look like from ImageNet, a labelled image set
much larger than the student's videos and separate from them. The demo's "ImageNet" is a
set of single-frame scenes (demo/textures.py) of all `N_CONCEPTS` textures, the student's
classes among them, drawn from their own random stream; a ResNet-18 at the demo's frame size
learns it in seconds and is saved as a torchvision state dict, the file format of
`--image_teacher_weights`.

The network is trained on what the demo's image teacher is shown (SPEC §2): one frame of
the student's augmented clip (RandomResizedCrop scale 0.25-1, horizontal flip, SIZE px),
normalized with the clip's Kinetics statistics.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor

from datasets.spatial import random_resized_crop_params
from datasets.transforms import KINETICS_MEAN, KINETICS_STD, normalize_clip
from demo.textures import N_CONCEPTS, concept_tiles, design, render_scene

SIZE = 16                     # the student's --sample_size and --image_size
CROP_SCALE, CROP_RATIO = (0.25, 1.0), (3 / 4, 4 / 3)   # the student's training crops (SPEC §4)
WEIGHTS_FILE = "image_teacher_resnet18.pth"
RECORD_FILE = "image_teacher.json"
IMAGE_STREAM = 1              # the image set's random stream, apart from the videos' (0)


@dataclass(frozen=True)
class TeacherSettings:
    images_per_concept: int = 128
    held_out_per_concept: int = 40
    epochs: int = 2
    batch_size: int = 64
    learning_rate: float = 0.1
    seed: int = 0


def image_set(n_per_concept: int, seed: int, split: int) -> tuple[np.ndarray, np.ndarray]:
    """`n_per_concept` single-frame scenes of each of the N_CONCEPTS textures.

    Returns images (N, HEIGHT, WIDTH, 3) uint8 and labels (N,) int64 (concept ids). The
    random stream is (seed, IMAGE_STREAM, split): disjoint from the demo videos' stream, and
    split 0 (training) from split 1 (held out).
    """
    rng = np.random.default_rng([seed, IMAGE_STREAM, split])
    tiles = concept_tiles()
    labels = np.repeat(np.arange(N_CONCEPTS), n_per_concept)
    images = np.stack([render_scene(int(c), rng, 1, tiles)[0] for c in labels])
    return images, labels


def to_batch(images: np.ndarray) -> Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32, normalized as the student's clips are."""
    clip = torch.from_numpy(images).permute(3, 0, 1, 2)[None]          # (1, 3, N, H, W)
    return normalize_clip(clip, KINETICS_MEAN, KINETICS_STD)[0].transpose(0, 1).contiguous()


def augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """(N, 3, H, W) → (N, 3, SIZE, SIZE): each image's own random resized crop and flip, the
    draws of the student's training transform (bilinear, align_corners=False)."""
    out = []
    for image in images:
        top, left, h, w = random_resized_crop_params(image.shape[-2], image.shape[-1], CROP_SCALE,
                                                     CROP_RATIO, generator)
        crop = F.interpolate(image[None, :, top:top + h, left:left + w], size=(SIZE, SIZE),
                             mode="bilinear", align_corners=False)
        if torch.rand(1, generator=generator).item() < 0.5:
            crop = crop.flip(-1)
        out.append(crop)
    return torch.cat(out)


def center_crop(images: Tensor) -> Tensor:
    """(N, 3, H, W) → (N, 3, SIZE, SIZE), the central SIZE × SIZE window."""
    top, left = (images.shape[-2] - SIZE) // 2, (images.shape[-1] - SIZE) // 2
    return images[..., top:top + SIZE, left:left + SIZE]


def train_teacher(settings: TeacherSettings) -> tuple[torchvision.models.ResNet, float]:
    """Train `resnet18(num_classes=N_CONCEPTS)` on the image set from scratch.

    SGD with momentum 0.9, weight decay 1e-4, cosine learning rate over all steps. Same
    settings, seed and thread count → same weights. Returns the network (eval mode) and
    its top-1 accuracy (0-1) on the held-out images (centre crops); chance is 1/N_CONCEPTS.
    """
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    images, labels = image_set(settings.images_per_concept, settings.seed, split=0)
    x, y = to_batch(images), torch.from_numpy(labels)
    network = torchvision.models.resnet18(num_classes=N_CONCEPTS)
    optimizer = torch.optim.SGD(network.parameters(), lr=settings.learning_rate, momentum=0.9,
                                weight_decay=1e-4)
    steps = settings.epochs * -(-len(y) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    network.train()
    for _ in range(settings.epochs):
        order = torch.randperm(len(y), generator=generator)
        for batch in order.split(settings.batch_size):
            loss = F.cross_entropy(network(augment(x[batch], generator)), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    network.eval()
    return network, held_out_accuracy(network, settings)


@torch.no_grad()
def held_out_accuracy(network: torch.nn.Module, settings: TeacherSettings) -> float:
    """Top-1 (0-1) of `network` on the held-out images, centre-cropped."""
    images, labels = image_set(settings.held_out_per_concept, settings.seed, split=1)
    logits = network(center_crop(to_batch(images)))
    return float((logits.argmax(1) == torch.from_numpy(labels)).float().mean())


def demo_teacher_weights(root: str | Path, settings: TeacherSettings = TeacherSettings()) -> Path:
    """The demo's image teacher weights under `root`: trained and written there unless a file
    from the same settings and design is already there. Returns the path to pass as
    `--image_teacher_weights` (a torchvision resnet18 state dict, `fc.*` included).

    `root/image_teacher.json` records the settings, the design and the held-out accuracy.
    """
    root = Path(root)
    weights, record_file = root / WEIGHTS_FILE, root / RECORD_FILE
    params = json.loads(json.dumps({"settings": settings.__dict__, "design": design()}))
    if weights.is_file() and record_file.is_file():
        if {k: v for k, v in json.loads(record_file.read_text()).items() if k in params} == params:
            return weights
    network, accuracy = train_teacher(settings)
    root.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), weights)
    record = {**params, "held_out_top1": accuracy, "chance": 1 / N_CONCEPTS}
    record_file.write_text(json.dumps(record, indent=2) + "\n")
    return weights
