"""One optimisation step: student + teachers → CCL objective → one backward → SGD steps."""
import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from training.batch import Batch
from training.distributed import gather_with_grad
from training.objective import TeacherInputs, ccl_objective
from training.teachers import Teacher


@dataclass
class StepResult:
    loss: Tensor               # scalar, detached
    terms: dict[str, Tensor]   # detached scalars, one per loss term
    correct: Tensor            # number of correct clip predictions over the global batch
    count: int                 # global batch size
    finite: bool               # False: the step was skipped (non-finite loss or gradient)


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """bf16/fp16 autocast on CUDA when `dtype` is given; a no-op otherwise (fp32, `--exact`)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def configure_backends(device: torch.device, exact: bool) -> None:
    """cuDNN autotuning always. `--exact` keeps PyTorch's default precision, the one the
    original ran under (fp32 matmuls; TF32 convolutions, cuDNN's default); the default mode
    also lets fp32 matmuls use TF32 (most of its work is bf16 under autocast anyway)."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = not exact


def gradients_finite(parameters) -> Tensor:
    """0-d bool tensor: every existing gradient is finite (one reduction, no host sync)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(True)
    norms = torch._foreach_norm(grads)
    return torch.isfinite(torch.stack(norms).sum())


def train_step(student: nn.Module, teachers: list[Teacher], batch: Batch,
               optimizers: list[torch.optim.Optimizer], loss_weight: float,
               autocast_dtype: torch.dtype | None = None,
               objective: Callable = ccl_objective) -> StepResult:
    """Forward, the CCL objective over the global batch, one backward, and the SGD steps.

    The same function serves the baseline (`teachers=[]`) and CCL (A), (I), (AI). Under
    DDP, student outputs, teacher features and labels are gathered from every rank before
    the losses (SPEC §4). A non-finite loss or gradient skips every optimizer step.
    `objective` is `ccl_objective` or its torch.compile'd form (`--compile`).
    """
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    device = batch.clip.device
    with autocast_context(device, autocast_dtype):
        logits, features = student(batch.clip)
        outputs = [(teacher, *teacher.features(batch)) for teacher in teachers]
        target = gather_with_grad(batch.target)
        branches = [TeacherInputs(teacher, gather_with_grad(t), None if w is None else gather_with_grad(w))
                    for teacher, t, w in outputs]
        logits, features = gather_with_grad(logits), gather_with_grad(features)
        loss, terms = objective(logits, features, target, branches, loss_weight)
    loss.backward()
    parameters = [p for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]]
    # One host sync per step. Fused SGD's device-side `found_inf` would avoid it, but in
    # torch 2.14 a skipped first step leaves its momentum buffer uninitialised.
    finite = bool(torch.isfinite(loss.detach()) & gradients_finite(parameters).to(device))
    if finite:
        for optimizer in optimizers:
            optimizer.step()
    correct = (logits.detach().argmax(1) == target).sum()
    return StepResult(loss=loss.detach(), terms=terms, correct=correct, count=target.shape[0], finite=finite)
