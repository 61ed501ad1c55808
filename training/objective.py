"""The CCL objective with the exact gradient routing of SPEC §3, in one backward pass."""
from dataclasses import dataclass

import torch
from torch import Tensor

from losses import symmetric_kl, symmetric_nce_pairs, weighted_cross_entropy
from losses.precision import at_least_fp32, autocast_off
from training.teachers import Teacher

DIVERGENCE_WEIGHT = 0.5   # the original's JSDLoss(weight=0.5)


@dataclass
class TeacherInputs:
    teacher: Teacher
    features: Tensor          # t: (B, D), D = the teacher's feature dimension (512 in the paper)
    weight: Tensor | None     # (B,) 0/1 mask of samples taking part, None = all


def ccl_objective(logits: Tensor, features: Tensor, target: Tensor,
                  branches: list[TeacherInputs], loss_weight: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss whose single backward gives SPEC §3's gradients.

    logits z_v: (B, C) and features v: (B, 512) of the student, over the whole (global) batch.
    target: (B,) labels. branches: one entry per active teacher (empty = baseline), each
    with teacher features t (B, d_T). loss_weight: w of CCL (AI) (SPEC §3).

    Returns (L_v + Σ_T L_m(T), terms) with detached scalar terms for logging:
      L_v = CE(z_v) + λ Σ_T ([C(v',m)+C(v',t)] + D(z_v,z_m))       (student and heads)
      L_m(T) = CE(z_m) + [C(v',m)+C(m,t)] + D(z_v,z_m)              (heads only)
    with λ = 1 for a single teacher (CCL (A), (I)) and λ = w for two (CCL (AI)),
    C the symmetric contrastive loss at the teacher's τ, D = 0.5·symmetric KL (JSDLoss(0.5)),
    v' = P_T·v, the head's projection of v into the teacher's d_T-dimensional space when
    d_T ≠ 512, and v' = v when d_T = 512 (the paper; `CompositionClassifier.project_student`).
    L_m is computed on a second head pass over the *detached* student outputs, so the
    student receives ∇L_v only (through P_T when there is one) while each head, P_T
    included, receives ∇(L_m + L_v): what the original obtained with one backward pass per
    optimizer.

    Precision: fp32 (fp64 for fp64 inputs) whether or not autocast is on. The inputs are
    promoted and autocast is off in here, so the student and the image teacher run in
    bf16 around this call while the composition heads and every loss compute what the
    original computes in fp32 from the same network outputs. The heads count as part of
    the objective: two linear layers over B rows, a negligible share of a step, whose
    output m enters the τ = 0.1 similarities. Compiled (`torch.compile`), call it outside
    autocast: the compiled backward does not keep the autocast-off region (torch 2.11 and
    2.14 ran its matmuls in bf16, 0.3-0.6% off the fp32 gradients).
    """
    with autocast_off(features):
        return _objective(at_least_fp32(logits), at_least_fp32(features), target,
                          branches, loss_weight)


def _objective(logits: Tensor, features: Tensor, target: Tensor,
               branches: list[TeacherInputs], loss_weight: float) -> tuple[Tensor, dict[str, Tensor]]:
    distill_weight = 1.0 if len(branches) == 1 else loss_weight
    ce = weighted_cross_entropy(logits, target)
    student_loss = ce
    head_losses = []
    terms = {"ce": ce.detach()}
    v_frozen, z_frozen = features.detach(), logits.detach()
    for branch in branches:
        teacher, head, w, tau = branch.teacher, branch.teacher.head, branch.weight, branch.teacher.temperature
        t = at_least_fp32(branch.features)
        # One head pass over [v ; v_frozen]: the first half carries ∇L_v into the student,
        # the second ∇L_m into the head only. Each branch's terms run as one batch (four
        # contrastive pairs, two divergences): a small batch's step is launch-bound on a GPU.
        (z_m, z_m_head), (m, m_head) = (x.chunk(2) for x in head(torch.cat([t, t]), torch.cat([features, v_frozen])))
        v_in_t, v_frozen_in_t = head.project_student(torch.cat([features, v_frozen])).chunk(2)
        nce = symmetric_nce_pairs([(v_in_t, m), (v_in_t, t), (v_frozen_in_t, m_head), (m_head, t)],
                                  target, tau, w)
        kl = DIVERGENCE_WEIGHT * symmetric_kl(torch.stack([logits, z_frozen]), torch.stack([z_m, z_m_head]), w)
        contrast, divergence = nce[0] + nce[1], kl[0]
        student_loss = student_loss + distill_weight * (contrast + divergence)
        head_losses.append(weighted_cross_entropy(z_m_head, target, w) + nce[2] + nce[3] + kl[1])

        terms[f"{teacher.name}/contrast"] = contrast.detach()
        terms[f"{teacher.name}/divergence"] = divergence.detach()
        terms[f"{teacher.name}/head"] = head_losses[-1].detach()
    terms["student"] = student_loss.detach()
    # No `+ 0` for the baseline: inductor (torch 2.14) folds it and returns a loss without
    # grad_fn when a detached copy of the same value is also returned (tests/test_gradient_routing.py).
    return sum(head_losses, student_loss), terms
