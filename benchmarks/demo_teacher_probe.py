"""Does the demo's trained image teacher know the student's classes? A linear probe.

Trains the demo teacher (demo/image_teacher.py), renders few-shot student videos of the
STUDENT_CONCEPTS (demo/textures.py, the videos' random stream), and fits a logistic
regression on the pooled 512-d ResNet-18 features of the training videos' frames; reports
frame- and video-level top-1 on the validation videos' frames, for the trained teacher and
for an untrained ResNet-18 (BatchNorm calibrated on the same training frames, as the demo's
untrained teacher). Prints one JSON line.

    OMP_NUM_THREADS=2 python benchmarks/demo_teacher_probe.py [--train_per_class 16]
"""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from demo.image_teacher import TeacherSettings, center_crop, to_batch, train_teacher
from demo.textures import STUDENT_CONCEPTS, concept_tiles, render_scene
from models.image_teacher import calibrate_batchnorm

FRAMES = 24


def student_frames(per_class: int, seed: int, split: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, FRAMES, 3, 16, 16) normalized centre crops of per_class videos per student class,
    and (V,) labels 0..5."""
    rng = np.random.default_rng([seed, 0, split])
    tiles = concept_tiles()
    labels = np.repeat(np.arange(len(STUDENT_CONCEPTS)), per_class)
    videos = [center_crop(to_batch(render_scene(STUDENT_CONCEPTS[c], rng, FRAMES, tiles))) for c in labels]
    return torch.stack(videos), torch.from_numpy(labels)


@torch.no_grad()
def pooled(network: nn.Module, videos: torch.Tensor) -> torch.Tensor:
    """(V, T, 3, H, W) → (V, T, 512) features before `fc`."""
    network.fc = nn.Identity()
    return network.eval()(videos.flatten(0, 1)).view(*videos.shape[:2], -1)


def probe(train: torch.Tensor, train_y: torch.Tensor, val: torch.Tensor, val_y: torch.Tensor) -> dict:
    """Logistic regression (L2 1e-3, 300 full-batch Adam steps) on standardized frame
    features; top-1 (%) per frame and per video (mean of its frames' logits)."""
    mean, std = train.flatten(0, 1).mean(0), train.flatten(0, 1).std(0) + 1e-6
    x, v = (train - mean) / std, (val - mean) / std
    y = train_y.repeat_interleave(train.shape[1])
    linear = nn.Linear(x.shape[-1], int(train_y.max()) + 1)
    optimizer = torch.optim.Adam(linear.parameters(), lr=0.01, weight_decay=1e-3)
    for _ in range(300):
        loss = F.cross_entropy(linear(x.flatten(0, 1)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = linear(v)
    frame = (logits.argmax(-1) == val_y[:, None]).float().mean()
    video = (logits.mean(1).argmax(-1) == val_y).float().mean()
    return {"frame_top1": round(100 * float(frame), 1), "video_top1": round(100 * float(video), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train_per_class", type=int, default=16)
    parser.add_argument("--val_per_class", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    start = time.time()
    teacher, held_out = train_teacher(TeacherSettings(seed=args.seed))
    seconds = time.time() - start
    train, train_y = student_frames(args.train_per_class, args.seed, 0)
    val, val_y = student_frames(args.val_per_class, args.seed, 1)
    untrained = calibrate_batchnorm(torchvision.models.resnet18(), train.flatten(0, 1))
    print(json.dumps({
        "teacher_seconds": round(seconds, 1), "teacher_held_out_top1": round(100 * held_out, 1),
        "teacher_chance": round(100 / 16, 1), "student_chance": round(100 / len(STUDENT_CONCEPTS), 1),
        "train_per_class": args.train_per_class, "threads": torch.get_num_threads(),
        "probe_trained": probe(pooled(teacher, train), train_y, pooled(teacher, val), val_y),
        "probe_untrained": probe(pooled(untrained, train), train_y, pooled(untrained, val), val_y)}))


if __name__ == "__main__":
    main()
