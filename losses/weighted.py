"""Cross-entropy restricted to a subset of the batch, with static shapes."""
import torch.nn.functional as F
from torch import Tensor

from losses.precision import at_least_fp32, autocast_off


def weighted_cross_entropy(logits: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean cross-entropy over the samples with weight > 0.

    logits: (B, C); targets: (B,) class ids; weight: optional (B,) 0/1 mask.
    Returns a scalar (float32, or float64 for float64 inputs; fp32 under autocast too); 0
    when no sample is masked in. Equal to `F.cross_entropy(logits[mask], targets[mask])`
    without the data-dependent shape that would force host syncs and recompiles.
    """
    with autocast_off(logits):
        per_sample = F.cross_entropy(at_least_fp32(logits), targets, reduction="none")
        if weight is None:
            return per_sample.mean()
        member = (weight > 0).to(per_sample.dtype)
        return (per_sample * member).sum() / member.sum().clamp(min=1)
