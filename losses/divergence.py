"""The original's "JSD" loss, which is a symmetric KL divergence (SPEC §3)."""
import math

import torch
from torch import Tensor, nn

from losses.precision import at_least_fp32, autocast_off

EPS = 1e-10


def symmetric_kl(p_logits: Tensor, q_logits: Tensor, weight: Tensor | None = None) -> Tensor:
    """mean_batch Σ_c [p_c·log(p_c/q_c + ε) + q_c·log(q_c/p_c + ε)] of SPEC §3, with
    p = σ(p_logits), q = σ(q_logits) (softmax at temperature 1) and ε = 1e-10 added to the
    ratio, as the original places it.

    p_logits, q_logits: (B, C) logits, or (K, B, C) for K pairs at once (one set of
    kernels: a small batch's step on a GPU is bound by how many it launches).
    weight: optional (B,) 0/1 mask; the mean is then over the masked-in samples only.
    Returns a scalar, or (K,) (float32, or float64 for float64 inputs; fp32 under autocast
    too); 0 when no sample is masked in.

    log(p/q + ε) is computed as logaddexp(log p − log q, log ε) from log-softmax: the same
    value in real arithmetic, so the original's value and gradient wherever it is finite,
    and finite where its p/q overflows or is 0/0 (confident, disagreeing logits).
    """
    with autocast_off(p_logits):
        log_p = at_least_fp32(p_logits).log_softmax(dim=-1)
        log_q = at_least_fp32(q_logits).log_softmax(dim=-1)
        log_ratio = log_p - log_q
        log_eps = log_ratio.new_full((), math.log(EPS))
        per_sample = ((log_p.exp() * torch.logaddexp(log_ratio, log_eps)).sum(-1)
                      + (log_q.exp() * torch.logaddexp(-log_ratio, log_eps)).sum(-1))
        if weight is None:
            return per_sample.mean(-1)
        member = (weight > 0).to(per_sample.dtype)
        return (per_sample * member).sum(-1) / member.sum().clamp(min=1)


class JSDLoss(nn.Module):
    """The original release's `JSDLoss(weight)`: `forward(p_logits, q_logits)` returns
    `weight · symmetric_kl(p_logits, q_logits)`."""

    def __init__(self, weight: float = 0.5):
        super().__init__()
        self.weight = weight

    def forward(self, p_logits: Tensor, q_logits: Tensor,
                weight: Tensor | None = None) -> Tensor:
        return self.weight * symmetric_kl(p_logits, q_logits, weight)
