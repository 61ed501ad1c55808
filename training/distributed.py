"""Process-group helpers: rank queries and the autograd-aware gather of SPEC §4.

Under DistributedDataParallel every loss must see the global batch, as the paper's
DataParallel runs did: features are gathered from all ranks *with* their gradients.
"""
import itertools
import os
from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import Tensor, nn

from errors import UserError


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def shutdown() -> None:
    """Leave the process group, if any (NCCL wants an explicit teardown)."""
    if is_distributed():
        dist.destroy_process_group()


def is_main_process() -> bool:
    return rank() == 0


# What torchrun sets for every process, and what joining its process group reads.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def check_torchrun(batch_size: int, environment: Mapping[str, str]) -> None:
    """--distributed: launched by torchrun (RANK, WORLD_SIZE set), with a global batch that
    splits evenly over its processes. Raises UserError."""
    unset = [name for name in TORCHRUN_VARIABLES if name not in environment]
    if unset:
        raise UserError(f"--distributed needs torchrun ({', '.join(unset)} "
                        f"{'is' if len(unset) == 1 else 'are'} not set): launch with "
                        "`torchrun --nproc_per_node N main.py --distributed ...`, or drop --distributed")
    processes = environment["WORLD_SIZE"]
    if not processes.isdigit() or int(processes) < 1:
        raise UserError(f"--distributed: WORLD_SIZE={processes} is not a number of processes; launch with "
                        "`torchrun --nproc_per_node N main.py --distributed ...`")
    processes = int(processes)
    if batch_size % processes:
        raise UserError(f"--batch_size {batch_size} is the global batch and must be divisible by the "
                        f"{processes} torchrun processes: pass a multiple of {processes}")


def init_from_environment(use_cuda: bool) -> torch.device:
    """Join the process group that `torchrun` describes in the environment.

    Returns this process's device. Without torchrun variables, nothing is initialised.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError("--distributed needs torchrun (RANK/WORLD_SIZE unset): "
                           "launch with `torchrun --nproc_per_node N main.py --distributed ...`")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradients over ranks and returns this
    rank's slice, so that DDP's gradient averaging yields the gradient of the global loss."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.batch = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        # A copy: autograd may hand the same gradient tensor to other branches of the
        # graph, which an in-place all_reduce would silently scale by the world size.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.batch
        return grad[start:start + ctx.batch]


def gather_with_grad(x: Tensor) -> Tensor:
    """(b, ...) per rank → (world·b, ...) in rank order; gradients flow back to each rank.

    Every rank must pass the same b (DistributedSampler gives equal shards). Without a
    process group, returns x unchanged.
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum of x over ranks (in place); x unchanged without a process group."""
    if is_distributed():
        dist.all_reduce(x)
    return x


@torch.no_grad()
def broadcast_from_main(module: nn.Module) -> None:
    """Overwrite every rank's parameters and buffers of `module` with rank 0's (in place).

    For modules outside DistributedDataParallel (the composition heads, the frozen image
    teacher): their gradients come from the identical global loss on every rank, so they
    stay identical only if they start identical, whatever each rank's RNG did before.
    Without a process group, does nothing.
    """
    if not is_distributed():
        return
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        dist.broadcast(tensor.data, src=0)
