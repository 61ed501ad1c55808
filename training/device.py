"""The device a run trains on, and the one line that says so (stderr and run.log)."""
import os

import torch

from training.config import RunConfig
from training.distributed import init_from_environment, is_distributed, rank, world_size
from training.precision import speed_mode


def select_device(run: RunConfig) -> torch.device:
    """CUDA when a device is visible and not --no_cuda; under --distributed this process's
    device in the process group it joins."""
    use_cuda = torch.cuda.is_available() and not run.no_cuda
    if run.distributed:
        return init_from_environment(use_cuda)
    return torch.device("cuda" if use_cuda else "cpu")


_SHORT_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def uses_data_parallel(device: torch.device) -> bool:
    """One process on several visible GPUs: the student runs under DataParallel (the
    paper's setup for the CCL configurations)."""
    return not is_distributed() and device.type == "cuda" and torch.cuda.device_count() > 1


def describe_device(device: torch.device, no_cuda: bool, exact: bool) -> str:
    """E.g. `cuda:0 (NVIDIA H100 80GB HBM3), 2 GPUs, DataParallel, bf16 autocast` or
    `cpu (no CUDA device visible; GPUS/CUDA_VISIBLE_DEVICES=0,1 is ignored), fp32`.

    The scripts set CUDA_VISIBLE_DEVICES from their GPUS variable: when it names GPUs but
    none is visible, the line says that it is ignored."""
    parts = [_device_name(device, no_cuda)]
    if is_distributed():
        parts.append(f"rank {rank()} of {world_size()}, DistributedDataParallel")
    elif device.type == "cuda":
        count = torch.cuda.device_count()
        parts.append(f"{count} GPU{'s' if count > 1 else ''}" + (", DataParallel" if uses_data_parallel(device) else ""))
    mode = speed_mode(device, exact)
    parts.append(f"{_SHORT_DTYPE_NAMES[mode.autocast_dtype]} autocast" if mode.autocast_dtype else "fp32")
    return ", ".join(parts)


def _device_name(device: torch.device, no_cuda: bool) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if no_cuda:
        return f"{device.type} (--no_cuda)"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible and visible != "-1":
        return f"{device.type} (no CUDA device visible; GPUS/CUDA_VISIBLE_DEVICES={visible} is ignored)"
    return f"{device.type} (no CUDA device visible)"
