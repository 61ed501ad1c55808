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
        similarity = _similarity(x, y, temperature)
        return _nce_over_rows(similarity, labels, weight, similarity.dtype)


def symmetric_nce(x: Tensor, y: Tensor, labels: Tensor, temperature: float,
                  weight: Tensor | None = None) -> Tensor:
    """C(x, y) = NCE(x, y) + NCE(y, x) of SPEC §3; shapes as `multiclass_nce`.

    NCE(y, x)'s similarities are NCE(x, y)'s transposed, so both directions share one
    normalization and one matrix product and run as one (2, B, B) stack: a third of the
    kernels of two separate calls, which is what bounds a small batch's step on a GPU."""
    with autocast_off(x):
        similarity = _similarity(x, y, temperature)
        both = torch.stack([similarity, similarity.t()])
        return _nce_over_rows(both, labels, weight, similarity.dtype)


def _similarity(x: Tensor, y: Tensor, temperature: float) -> Tensor:
    """x̂ ŷᵀ / τ: (B, D), (B, D) → (B, B), in fp32 (fp64 for fp64 inputs)."""
    x = F.normalize(at_least_fp32(x), dim=1)
    y = F.normalize(at_least_fp32(y), dim=1)
    return x @ y.t() / temperature


def _nce_over_rows(logits: Tensor, labels: Tensor, weight: Tensor | None, dtype: torch.dtype) -> Tensor:
    """Σ over the leading dimensions of the masked mean of ℓ_i (see `multiclass_nce`).

    logits: (..., B, B), row i of each matrix the similarities of sample i to every j.
    labels: (B,); weight: optional (B,) 0/1 mask. Returns a scalar.
    """
    same = labels[:, None] == labels[None, :]
    member = torch.ones_like(labels, dtype=dtype) if weight is None else (weight > 0).to(dtype)
    pair = member[:, None] * member[None, :]
    # Non-members get a large negative logit, not -inf, so a row of a non-member never
    # turns into NaN; those rows are dropped by `member` below anyway.
    p = logits.masked_fill(pair == 0, -1e4).softmax(dim=-1)
    pos = same.to(dtype) * pair
    neg = (~same).to(dtype) * pair
    pos_term = -(pos * torch.log(p + EPS)).sum(-1) / pos.sum(1).clamp(min=1)
    neg_term = -(neg * torch.log(1 - p + EPS)).sum(-1) / neg.sum(1).clamp(min=1)
    return ((pos_term + neg_term) * member).sum() / member.sum().clamp(min=1)


class NCELoss(nn.Module):
    """The original release's `NCELoss(temperature)`: `forward(f1, f2, targets)` is one
    direction of SPEC §3's contrastive loss; `weight` optionally masks samples."""

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        self.temperature = temperature

    def forward(self, f1: Tensor, f2: Tensor, targets: Tensor,
                weight: Tensor | None = None) -> Tensor:
        return multiclass_nce(f1, f2, targets, self.temperature, weight)
