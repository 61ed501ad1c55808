"""The original's "JSD" loss, which is a symmetric KL divergence (SPEC §3)."""
from torch import Tensor, nn

from losses.precision import at_least_fp32, autocast_off

EPS = 1e-10


def symmetric_kl(p_logits: Tensor, q_logits: Tensor, weight: Tensor | None = None) -> Tensor:
    """mean_batch [KL(σ(p)‖σ(q)) + KL(σ(q)‖σ(p))] of SPEC §3 (softmax at temperature 1).

    p_logits, q_logits: (B, C) logits.
    weight: optional (B,) 0/1 mask; the mean is then over the masked-in samples only.
    Returns a scalar (float32, or float64 for float64 inputs; fp32 under autocast too); 0
    when no sample is masked in. ε = 1e-10 inside the logs.
    """
    with autocast_off(p_logits):
        p = at_least_fp32(p_logits).softmax(dim=1)
        q = at_least_fp32(q_logits).softmax(dim=1)
        log_p, log_q = (p + EPS).log(), (q + EPS).log()
        per_sample = (p * (log_p - log_q)).sum(1) + (q * (log_q - log_p)).sum(1)
        if weight is None:
            return per_sample.mean()
        member = (weight > 0).to(per_sample.dtype)
        return (per_sample * member).sum() / member.sum().clamp(min=1)


class JSDLoss(nn.Module):
    """The original release's `JSDLoss(weight)`: `forward(p_logits, q_logits)` returns
    `weight · symmetric_kl(p_logits, q_logits)`."""

    def __init__(self, weight: float = 0.5):
        super().__init__()
        self.weight = weight

    def forward(self, p_logits: Tensor, q_logits: Tensor,
                weight: Tensor | None = None) -> Tensor:
        return self.weight * symmetric_kl(p_logits, q_logits, weight)
