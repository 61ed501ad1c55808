"""Losses against direct re-derivations of SPEC §3 written with loops."""
import math

import pytest
import torch

from losses import JSDLoss, NCELoss, multiclass_nce, symmetric_kl, weighted_cross_entropy

EPS = 1e-10


def naive_nce(x, y, labels, tau, members=None):
    """SPEC §3 NCE(x, y) by loops over i and j, restricted to `members` (indices)."""
    idx = list(range(len(x))) if members is None else list(members)
    if not idx:
        return 0.0
    xs = [x[i] / x[i].norm() for i in idx]
    ys = [y[j] / y[j].norm() for j in idx]
    total = 0.0
    for a, i in enumerate(idx):
        sims = [math.exp(float(xs[a] @ ys[b]) / tau) for b in range(len(idx))]
        z = sum(sims)
        pos, neg = [], []
        for b, j in enumerate(idx):
            p = sims[b] / z
            (pos if labels[i] == labels[j] else neg).append(p)
        term = -sum(math.log(p + EPS) for p in pos) / len(pos)
        if neg:
            term -= sum(math.log(1 - p + EPS) for p in neg) / len(neg)
        total += term
    return total / len(idx)


def naive_symmetric_kl(p_logits, q_logits):
    total = 0.0
    for zp, zq in zip(p_logits.tolist(), q_logits.tolist()):
        ep, eq = [math.exp(v) for v in zp], [math.exp(v) for v in zq]
        p = [v / sum(ep) for v in ep]
        q = [v / sum(eq) for v in eq]
        total += sum(a * (math.log(a + EPS) - math.log(b + EPS)) for a, b in zip(p, q))
        total += sum(b * (math.log(b + EPS) - math.log(a + EPS)) for a, b in zip(p, q))
    return total / len(p_logits)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_nce_matches_direct_definition(tau):
    torch.manual_seed(0)
    x, y = torch.randn(6, 8), torch.randn(6, 8)
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    expected = naive_nce(x, y, labels.tolist(), tau)
    assert multiclass_nce(x, y, labels, tau).item() == pytest.approx(expected, rel=1e-5)
    assert NCELoss(tau)(x, y, labels).item() == pytest.approx(expected, rel=1e-5)


def test_nce_is_not_symmetric_in_its_arguments():
    torch.manual_seed(1)
    x, y = torch.randn(5, 4), torch.randn(5, 4)
    labels = torch.tensor([0, 1, 1, 2, 0])
    assert multiclass_nce(x, y, labels, 0.5) != pytest.approx(multiclass_nce(y, x, labels, 0.5).item())
    assert multiclass_nce(y, x, labels, 0.5).item() == pytest.approx(naive_nce(y, x, labels.tolist(), 0.5), rel=1e-5)


def test_single_class_batch_is_finite_and_positive_term_only():
    torch.manual_seed(2)
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    labels = torch.zeros(4, dtype=torch.long)
    loss = multiclass_nce(x, y, labels, 0.5)
    assert torch.isfinite(loss)
    # every p_ij is a positive: ℓ_i = −mean_j log p_ij
    assert loss.item() == pytest.approx(naive_nce(x, y, labels.tolist(), 0.5), rel=1e-5)


def test_weight_restricts_nce_to_the_subset():
    torch.manual_seed(3)
    x, y = torch.randn(7, 8), torch.randn(7, 8)
    labels = torch.tensor([0, 1, 0, 2, 1, 1, 2])
    weight = torch.tensor([1, 0, 1, 1, 0, 1, 1.0])
    members = [i for i in range(7) if weight[i] > 0]
    expected = naive_nce(x, y, labels.tolist(), 0.1, members)
    assert multiclass_nce(x, y, labels, 0.1, weight).item() == pytest.approx(expected, rel=1e-5)
    sub = torch.tensor(members)
    assert multiclass_nce(x, y, labels, 0.1, weight).item() == pytest.approx(
        multiclass_nce(x[sub], y[sub], labels[sub], 0.1).item(), rel=1e-6)


def test_empty_subset_gives_zero_with_a_graph():
    x = torch.randn(3, 4, requires_grad=True)
    loss = multiclass_nce(x, torch.randn(3, 4), torch.tensor([0, 1, 2]), 0.5, torch.zeros(3))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_symmetric_kl_and_jsd_weight():
    torch.manual_seed(4)
    p, q = torch.randn(5, 6), torch.randn(5, 6)
    expected = naive_symmetric_kl(p, q)
    assert symmetric_kl(p, q).item() == pytest.approx(expected, rel=1e-5)
    assert JSDLoss(0.5)(p, q).item() == pytest.approx(0.5 * expected, rel=1e-5)
    assert symmetric_kl(p, p).item() == pytest.approx(0.0, abs=1e-6)
    weight = torch.tensor([1, 0, 0, 1, 1.0])
    sub = torch.tensor([0, 3, 4])
    assert symmetric_kl(p, q, weight).item() == pytest.approx(naive_symmetric_kl(p[sub], q[sub]), rel=1e-5)


def test_weighted_cross_entropy_hand_case():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 3.0]])
    target = torch.tensor([0, 1, 0])
    ce = [math.log(1 + math.exp(-2.0)), math.log(2.0), math.log(1 + math.exp(2.0))]
    assert weighted_cross_entropy(logits, target).item() == pytest.approx(sum(ce) / 3, rel=1e-6)
    weight = torch.tensor([1.0, 0.0, 1.0])
    assert weighted_cross_entropy(logits, target, weight).item() == pytest.approx((ce[0] + ce[2]) / 2, rel=1e-6)
    assert weighted_cross_entropy(logits, target, torch.zeros(3)).item() == 0.0
