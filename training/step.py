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


@dataclass(frozen=True)
class SpeedMode:
    """How the student runs: bf16 autocast (CUDA only) and channels_last_3d memory."""
    autocast_dtype: torch.dtype | None
    channels_last: bool


def speed_mode(device: torch.device, exact: bool) -> SpeedMode:
    """`--exact`: fp32, contiguous. Otherwise bf16 autocast on CUDA, and channels_last_3d
    wherever its convolutions are fast: CUDA, and CPUs with oneDNN (1.4× on the student's
    forward + backward here, 2 cores, batch 4 × 16 × 112²).

    CPUs stay fp32 even with bf16 instructions: bf16 autocast was 2.3× faster on this
    AVX-512 BF16 CPU, but torch 2.14's oneDNN gave the weight gradient of the student's
    576 → 256 (3, 1, 1) convolution entries of about 1e36 at 32² × 8-frame clips, in every
    step with contiguous memory and in some with channels_last_3d."""
    if exact:
        return SpeedMode(None, False)
    on_cuda = device.type == "cuda"
    return SpeedMode(torch.bfloat16 if on_cuda else None,
                     on_cuda or (device.type == "cpu" and torch.backends.mkldnn.is_available()))


def configure_backends(device: torch.device) -> None:
    """cuDNN autotuning on CUDA. Matmuls keep PyTorch's default precision in every mode, the
    one the original ran under (fp32 matmuls; TF32 convolutions, cuDNN's default): under
    bf16 autocast the only fp32 matmuls left are the CCL objective's (contrastive
    similarities, composition heads), which must stay fp32 (SPEC §3)."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False


def gradients_finite(parameters) -> Tensor:
    """0-d bool tensor: every existing gradient is finite (one reduction, no host sync)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(True)
    norms = torch._foreach_norm(grads)
    return torch.isfinite(torch.stack(norms).sum())


def buffers_by_dtype(module: nn.Module) -> dict[torch.dtype, list[Tensor]]:
    """The module's buffers grouped by dtype, so that copying them takes one fused
    (foreach) kernel per dtype rather than one per buffer (R(2+1)D-18 has 72)."""
    groups: dict[torch.dtype, list[Tensor]] = {}
    for buffer in module.buffers():
        groups.setdefault(buffer.dtype, []).append(buffer)
    return groups


def train_step(student: nn.Module, teachers: list[Teacher], batch: Batch,
               optimizers: list[torch.optim.Optimizer], loss_weight: float,
               autocast_dtype: torch.dtype | None = None,
               objective: Callable = ccl_objective) -> StepResult:
    """Forward, the CCL objective over the global batch, one backward, and the SGD steps.

    The same function serves the baseline (`teachers=[]`) and CCL (A), (I), (AI). Under
    DDP, student outputs, teacher features and labels are gathered from every rank before
    the losses (SPEC §4). A non-finite loss or gradient skips every optimizer step and
    restores the student's buffers (BatchNorm statistics) to their values before the step.
    `objective` is `ccl_objective` or its torch.compile'd form (`--compile`).
    """
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    device = batch.clip.device
    # BatchNorm updates its running statistics during the forward pass: a skipped step
    # must not leave non-finite ones behind, or every later evaluation is NaN.
    buffers = buffers_by_dtype(student)
    saved = {dtype: torch._foreach_mul(group, 1) for dtype, group in buffers.items()}
    with autocast_context(device, autocast_dtype):
        logits, features = student(batch.clip)
        outputs = [(teacher, *teacher.features(batch)) for teacher in teachers]
        target = gather_with_grad(batch.target)
        branches = [TeacherInputs(teacher, gather_with_grad(t), None if w is None else gather_with_grad(w))
                    for teacher, t, w in outputs]
        logits, features = gather_with_grad(logits), gather_with_grad(features)
    # The objective is fp32 (SPEC §3) and runs outside autocast: compiled under autocast,
    # its backward would run the heads' and similarities' matmuls in bf16 (torch 2.11, 2.14).
    loss, terms = objective(logits, features, target, branches, loss_weight)
    loss.backward()
    parameters = [p for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]]
    # One host sync per step. Fused SGD's device-side `found_inf` would avoid it, but in
    # torch 2.14 a skipped first step leaves its momentum buffer uninitialised.
    finite = bool(torch.isfinite(loss.detach()) & gradients_finite(parameters).to(device))
    if finite:
        for optimizer in optimizers:
            optimizer.step()
    else:
        for dtype, group in buffers.items():
            torch._foreach_copy_(group, saved[dtype])
    correct = (logits.detach().argmax(1) == target).sum()
    return StepResult(loss=loss.detach(), terms=terms, correct=correct, count=target.shape[0], finite=finite)
