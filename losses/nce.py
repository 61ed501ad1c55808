"""Multi-class contrastive loss (SPEC §3, `NCELoss`)."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losses.precision import at_least_fp32, autocast_off

EPS = 1e-10


def multiclass_nce(x: Tensor, y: Tensor, labels: Tensor, temperature: float,
                   weight: Tensor | None = None) -> Tensor:
    """Multi-class contrastive loss of SPEC §3 (NCE(x, y), one direction).

    x, y: (B, D) features of two modalities for the same B samples.
    labels: (B,) class ids; every j with labels[j] == labels[i] is a positive of i.
    weight: optional (B,) 0/1 mask of samples that take part (e.g. have audio); the
        loss is then exactly NCE over that subset, with static shapes.
    Returns a scalar (float32, or float64 for float64 inputs; fp32 under autocast too). A
    row without negatives contributes only its positive term (the original divided by
    |N_i| = 0 there); a subset with no sample gives 0.

    ℓ_i = −mean_{j∈P_i} log(p_ij + ε) − mean_{j∈N_i} log(1 − p_ij + ε),
    p_ij = softmax_j(x̂_i·ŷ_j / τ), ε = 1e-10, placed as in the original. The original
    computes x̂_i·ŷ_j as 1 − ½‖x̂_i − ŷ_j‖², the same value in real arithmetic.
    """
    with autocast_off(x):
        x = F.normalize(at_least_fp32(x), dim=1)
        y = F.normalize(at_least_fp32(y), dim=1)
        logits = x @ y.t() / temperature
        same = labels[:, None] == labels[None, :]
        if weight is None:
            member = torch.ones_like(labels, dtype=x.dtype)
        else:
            member = (weight > 0).to(x.dtype)
        pair = member[:, None] * member[None, :]
        # Non-members get a large negative logit, not -inf, so a row of a non-member never
        # turns into NaN; those rows are dropped by `member` below anyway.
        logits = logits.masked_fill(pair == 0, -1e4)
        p = logits.softmax(dim=1)
        pos = same.to(x.dtype) * pair
        neg = (~same).to(x.dtype) * pair
        pos_term = -(pos * torch.log(p + EPS)).sum(1) / pos.sum(1).clamp(min=1)
        neg_term = -(neg * torch.log(1 - p + EPS)).sum(1) / neg.sum(1).clamp(min=1)
        per_sample = (pos_term + neg_term) * member
        return per_sample.sum() / member.sum().clamp(min=1)


def symmetric_nce(x: Tensor, y: Tensor, labels: Tensor, temperature: float,
                  weight: Tensor | None = None) -> Tensor:
    """C(x, y) = NCE(x, y) + NCE(y, x) of SPEC §3; shapes as `multiclass_nce`."""
    return (multiclass_nce(x, y, labels, temperature, weight)
            + multiclass_nce(y, x, labels, temperature, weight))


class NCELoss(nn.Module):
    """The original release's `NCELoss(temperature)`: `forward(f1, f2, targets)` is one
    direction of SPEC §3's contrastive loss; `weight` optionally masks samples."""

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        self.temperature = temperature

    def forward(self, f1: Tensor, f2: Tensor, targets: Tensor,
                weight: Tensor | None = None) -> Tensor:
        return multiclass_nce(f1, f2, targets, self.temperature, weight)
