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
        return _nce_per_matrix(similarity, labels, weight)


def symmetric_nce(x: Tensor, y: Tensor, labels: Tensor, temperature: float,
                  weight: Tensor | None = None) -> Tensor:
    """C(x, y) = NCE(x, y) + NCE(y, x) of SPEC §3; shapes as `multiclass_nce`."""
    return symmetric_nce_pairs([(x, y)], labels, temperature, weight)[0]


def symmetric_nce_pairs(pairs: list[tuple[Tensor, Tensor]], labels: Tensor, temperature: float,
                        weight: Tensor | None = None) -> Tensor:
    """[C(x_k, y_k) for each pair k] of SPEC §3 over the same samples, labels, τ and mask.

    pairs: K pairs of (B, D) features (one D for all). Returns (K,), in fp32 (fp64 for fp64
    inputs). NCE(y, x)'s similarities are NCE(x, y)'s transposed, so the K pairs take one
    normalization, one batched matrix product and one (2, K, B, B) stack of softmaxes: a
    small batch's step on a GPU is bound by how many kernels it launches, not their size.
    """
    first = pairs[0][0]
    with autocast_off(first):
        x = torch.stack([at_least_fp32(x) for x, _ in pairs])
        y = torch.stack([at_least_fp32(y) for _, y in pairs])
        similarity = _similarity(x, y, temperature)
        both = torch.stack([similarity, similarity.transpose(1, 2)])
        return _nce_per_matrix(both, labels, weight).sum(0)


def _similarity(x: Tensor, y: Tensor, temperature: float) -> Tensor:
    """x̂ ŷᵀ / τ: (..., B, D), (..., B, D) → (..., B, B), in fp32 (fp64 for fp64 inputs)."""
    x = F.normalize(at_least_fp32(x), dim=-1)
    y = F.normalize(at_least_fp32(y), dim=-1)
    return x @ y.transpose(-1, -2) / temperature


def _nce_per_matrix(logits: Tensor, labels: Tensor, weight: Tensor | None) -> Tensor:
    """NCE of each similarity matrix: the masked mean of ℓ_i (see `multiclass_nce`).

    logits: (..., B, B), row i of each matrix the similarities of sample i to every j.
    labels: (B,); weight: optional (B,) 0/1 mask. Returns (...).
    """
    dtype = logits.dtype
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
    return ((pos_term + neg_term) * member).sum(-1) / member.sum().clamp(min=1)


class NCELoss(nn.Module):
    """The original release's `NCELoss(temperature)`: `forward(f1, f2, targets)` is one
    direction of SPEC §3's contrastive loss; `weight` optionally masks samples."""

    def __init__(self, temperature: float = 0.5):
        super().__init__()
        self.temperature = temperature

    def forward(self, f1: Tensor, f2: Tensor, targets: Tensor,
                weight: Tensor | None = None) -> Tensor:
        return multiclass_nce(f1, f2, targets, self.temperature, weight)
