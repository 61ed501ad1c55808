"""One optimisation step: student + teachers → CCL objective → one backward → SGD steps.

`train_step` reads top to bottom: zero the gradients, snapshot the student's buffers,
forward and gather, the objective, backward, the finiteness check, then step or restore.
"""
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from training.batch import Batch
from training.distributed import gather_with_grad
from training.objective import TeacherInputs, ccl_objective
from training.precision import autocast_context
from training.teachers import Teacher


@dataclass
class StepResult:
    loss: Tensor               # scalar, detached
    terms: dict[str, Tensor]   # detached scalars, one per loss term
    correct: Tensor            # number of correct clip predictions over the global batch
    count: int                 # global batch size
    finite: bool               # False: the step was skipped (non-finite loss or gradient)


@dataclass
class Forward:
    """The step's forward outputs, gathered over every rank (SPEC §4): logits (B, C),
    features (B, 512), target (B,), and one TeacherInputs per teacher."""
    logits: Tensor
    features: Tensor
    target: Tensor
    branches: list[TeacherInputs]


class BufferSnapshot:
    """A copy of a module's buffers (BatchNorm running statistics), restorable in place.

    Taken every step, restored only after a skipped one: the copy is one `torch.cat` per
    dtype (R(2+1)D-18 has 72 buffers), the restore one `copy_` per buffer."""

    def __init__(self, module: nn.Module) -> None:
        self.groups: dict[torch.dtype, list[Tensor]] = {}
        for buffer in module.buffers():
            self.groups.setdefault(buffer.dtype, []).append(buffer)
        self.saved = {dtype: torch.cat([b.detach().reshape(-1) for b in group])
                      for dtype, group in self.groups.items()}

    def restore(self) -> None:
        for dtype, group in self.groups.items():
            pieces = self.saved[dtype].split([b.numel() for b in group])
            for buffer, piece in zip(group, pieces):
                buffer.copy_(piece.view_as(buffer))


def zero_gradients(optimizers: list[torch.optim.Optimizer]) -> None:
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)


def forward(student: nn.Module, teachers: list[Teacher], batch: Batch,
            autocast_dtype: torch.dtype | None) -> Forward:
    """Student and teachers on this rank's batch under autocast, gathered with their
    gradients from every rank (training.distributed.gather_with_grad)."""
    with autocast_context(batch.clip.device, autocast_dtype):
        logits, features = student(batch.clip)
        outputs = [(teacher, *teacher.features(batch)) for teacher in teachers]
        branches = [TeacherInputs(teacher, gather_with_grad(t), None if w is None else gather_with_grad(w))
                    for teacher, t, w in outputs]
        return Forward(gather_with_grad(logits), gather_with_grad(features), gather_with_grad(batch.target),
                       branches)


def gradients_finite(parameters: list[Tensor]) -> Tensor:
    """0-d bool tensor: every existing gradient is finite (one reduction, no host sync;
    the max-abs norm propagates NaN and cannot overflow)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(True)
    return torch.isfinite(torch.nn.utils.get_total_norm(grads, norm_type=float("inf")))


def step_is_finite(loss: Tensor, optimizers: list[torch.optim.Optimizer]) -> bool:
    """Whether the loss and every gradient of the optimizers' parameters are finite. One
    host sync per step: fused SGD's device-side `found_inf` would avoid it, but in torch
    2.14 a skipped first step leaves its momentum buffer uninitialised."""
    parameters = [p for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]]
    return bool(torch.isfinite(loss.detach()) & gradients_finite(parameters).to(loss.device))


def train_step(student: nn.Module, teachers: list[Teacher], batch: Batch,
               optimizers: list[torch.optim.Optimizer], loss_weight: float,
               autocast_dtype: torch.dtype | None = None,
               objective: Callable = ccl_objective) -> StepResult:
    """Forward, the CCL objective over the global batch, one backward, and the SGD steps.

    The same function serves the baseline (`teachers=[]`) and CCL (A), (I), (AI). Under
    DDP, student outputs, teacher features and labels are gathered from every rank before
    the losses (SPEC §4). A non-finite loss or gradient skips every optimizer step and
    restores the student's buffers (BatchNorm statistics) to their values before the step,
    so that no later evaluation inherits non-finite statistics.
    `objective` is `ccl_objective` or its torch.compile'd form (`--compile`).
    """
    zero_gradients(optimizers)
    buffers = BufferSnapshot(student)
    out = forward(student, teachers, batch, autocast_dtype)
    # The objective is fp32 (SPEC §3) and runs outside autocast: compiled under autocast,
    # its backward would run the heads' and similarities' matmuls in bf16 (torch 2.11, 2.14).
    loss, terms = objective(out.logits, out.features, out.target, out.branches, loss_weight)
    loss.backward()
    finite = step_is_finite(loss, optimizers)
    if finite:
        for optimizer in optimizers:
            optimizer.step()
    else:
        buffers.restore()
    correct = (out.logits.detach().argmax(1) == out.target).sum()
    return StepResult(loss=loss.detach(), terms=terms, correct=correct, count=out.target.shape[0], finite=finite)
