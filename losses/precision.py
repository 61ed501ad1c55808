"""Loss arithmetic precision: the losses of SPEC §3 compute in fp32 (fp64 for fp64 inputs)
whatever autocast is active; only the networks run in bf16."""
import torch
from torch import Tensor


def at_least_fp32(x: Tensor) -> Tensor:
    """Half/bfloat16 inputs (autocast) are promoted to float32; float64 stays float64, so
    exactness tests can run in double precision."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def autocast_off(x: Tensor) -> torch.autocast:
    """Context in which autocast is off on `x`'s device. Promoting the inputs alone is not
    enough: under autocast a matmul of fp32 tensors (the contrastive similarities) still
    runs in bf16."""
    return torch.autocast(x.device.type, enabled=False)
