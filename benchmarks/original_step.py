"""The original CCL release's training step, re-implemented as the speed baseline (SPEC §3, §7).

Same modules and loss functions as ours (numerically the original's), but the original's
structure of work, which is what the benchmark compares against:
- fp32 throughout, no channels_last, SGD without `fused` (PyTorch's default kernel);
- the image teacher runs under autograd: it is frozen only in the sense that it stays in
  eval mode and no optimizer holds it; its parameters require gradients as torchvision
  builds them, so every backward pass that reaches t also walks back through ResNet-34;
- the audio subset is taken by boolean indexing (a data-dependent shape and a host sync);
- one backward pass per loss through the whole student, with `retain_graph=True`: first
  each L_m(T), then the student's gradients are cleared and L_v goes back last, so the
  student keeps ∇L_v only while every head holds ∇(L_m + L_v);
- one SGD step per module group.
Not for training: `training.step.train_step` is the step to use.
"""
import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import ResNet

from losses import JSDLoss, NCELoss
from models.composition import CompositionClassifier
from models.image_teacher import ImageTeacher, pick_frame
from training.batch import Batch
from training.teachers import AUDIO_TEMPERATURE, IMAGE_TEMPERATURE

DIVERGENCE_WEIGHT = 0.5   # the original's JSDLoss(weight=0.5)


class TrackedImageTeacher(nn.Module):
    """The original's image teacher: a copy of `network` whose forward records autograd.

    forward: frames (B, 3, H, W) → t (B, 512), with a graph back to the ResNet-34 weights.
    """

    def __init__(self, network: ImageTeacher):
        super().__init__()
        self.network = copy.deepcopy(network).requires_grad_(True)

    def forward(self, frames: Tensor) -> Tensor:
        # ResNet.forward, not ImageTeacher.forward: the latter runs under no_grad.
        return ResNet.forward(self.network, frames)


def branch_losses(head: CompositionClassifier, t: Tensor, v: Tensor, z_v: Tensor, y: Tensor,
                  temperature: float) -> tuple[Tensor, Tensor]:
    """The two losses of one teacher on the samples it covers (SPEC §3).

    t, v: (b, 512) teacher and student features; z_v: (b, C) student logits; y: (b,) labels.
    Returns (distillation part of L_v: [C(v,m)+C(v,t)] + D(z_v,z_m), L_m(T)).
    """
    nce, jsd = NCELoss(temperature), JSDLoss(DIVERGENCE_WEIGHT)
    z_m, m = head(t, v)
    c_vm = nce(v, m, y) + nce(m, v, y)
    c_vt = nce(v, t, y) + nce(t, v, y)
    c_mt = nce(m, t, y) + nce(t, m, y)
    divergence = jsd(z_v, z_m)
    return c_vm + c_vt + divergence, F.cross_entropy(z_m, y) + c_vm + c_mt + divergence


def original_step(student: nn.Module, heads: dict[str, CompositionClassifier],
                  image_teacher: TrackedImageTeacher | None, batch: Batch,
                  optimizers: dict[str, torch.optim.Optimizer], loss_weight: float) -> Tensor:
    """One training step the original's way; returns L_v (detached scalar).

    heads: {"audio": ..., "image": ...} for the active teachers (empty = baseline).
    batch.clip: (B, 3, T, H, W) normalized fp32; batch.audio_weight: (B,) 0/1.
    optimizers: {"student": SGD, <head name>: SGD} as `training.optim.make_optimizers` builds.
    """
    for optimizer in optimizers.values():
        optimizer.zero_grad(set_to_none=True)
    z_v, v = student(batch.clip)
    y = batch.target
    weight = 1.0 if len(heads) == 1 else loss_weight
    loss_v = F.cross_entropy(z_v, y)
    head_losses = []
    if "audio" in heads:
        keep = batch.audio_weight > 0
        distill, loss_m = branch_losses(heads["audio"], batch.audio[keep], v[keep], z_v[keep], y[keep],
                                        AUDIO_TEMPERATURE)
        loss_v = loss_v + weight * distill
        head_losses.append(loss_m)
    if "image" in heads:
        if image_teacher is None:
            raise ValueError("an image head needs the image teacher network")
        t = image_teacher(pick_frame(batch.clip, batch.frame_index, batch.clip.shape[-1]))
        distill, loss_m = branch_losses(heads["image"], t, v, z_v, y, IMAGE_TEMPERATURE)
        loss_v = loss_v + weight * distill
        head_losses.append(loss_m)
    for loss_m in head_losses:
        loss_m.backward(retain_graph=True)
    optimizers["student"].zero_grad(set_to_none=True)
    loss_v.backward()
    for optimizer in optimizers.values():
        optimizer.step()
    return loss_v.detach()
