"""How a run uses its device: the student's precision and memory layout, and the backend
switches (SPEC §3: the CCL objective stays fp32 in every mode)."""
import contextlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SpeedMode:
    """How the student runs: bf16 autocast (CUDA only) and channels_last_3d memory."""
    autocast_dtype: torch.dtype | None
    channels_last: bool


def speed_mode(device: torch.device, exact: bool) -> SpeedMode:
    """`--exact`: fp32, contiguous. Otherwise bf16 autocast on CUDA, and channels_last_3d
    wherever its convolutions are fast: CUDA, and CPUs with oneDNN.

    CPUs stay fp32: torch 2.14's oneDNN bf16 weight gradient of the student's 576 → 256
    (3, 1, 1) convolution has entries of about 1e36 at 32² × 8-frame clips."""
    if exact:
        return SpeedMode(None, False)
    on_cuda = device.type == "cuda"
    return SpeedMode(torch.bfloat16 if on_cuda else None,
                     on_cuda or (device.type == "cpu" and torch.backends.mkldnn.is_available()))


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """bf16/fp16 autocast on CUDA when `dtype` is given; a no-op otherwise (fp32, `--exact`)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def configure_backends(device: torch.device) -> None:
    """cuDNN autotuning on CUDA. Matmuls keep PyTorch's default precision in every mode, the
    one the original ran under (fp32 matmuls; TF32 convolutions, cuDNN's default): under
    bf16 autocast the only fp32 matmuls left are the CCL objective's (contrastive
    similarities, composition heads), which must stay fp32 (SPEC §3)."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
