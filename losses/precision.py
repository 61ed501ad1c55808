"""Loss arithmetic precision."""
import torch
from torch import Tensor


def at_least_fp32(x: Tensor) -> Tensor:
    """Half/bfloat16 inputs (autocast) are promoted to float32; float64 stays float64, so
    exactness tests can run in double precision."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()
