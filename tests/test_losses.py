"""Losses against direct re-derivations of SPEC §3 written with loops."""
import math

import pytest
import torch
import torch.nn.functional as F

from losses import JSDLoss, NCELoss, multiclass_nce, symmetric_kl, symmetric_nce, weighted_cross_entropy
from losses.nce import symmetric_nce_pairs

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
    """SPEC §3 by loops, ε on the ratio as the original places it."""
    total = 0.0
    for zp, zq in zip(p_logits.tolist(), q_logits.tolist()):
        ep, eq = [math.exp(v) for v in zp], [math.exp(v) for v in zq]
        p = [v / sum(ep) for v in ep]
        q = [v / sum(eq) for v in eq]
        total += sum(a * math.log(a / b + EPS) for a, b in zip(p, q))
        total += sum(b * math.log(b / a + EPS) for a, b in zip(p, q))
    return total / len(p_logits)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_nce_matches_direct_definition(tau):
    torch.manual_seed(0)
    x, y = torch.randn(6, 8), torch.randn(6, 8)
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    expected = naive_nce(x, y, labels.tolist(), tau)
    assert multiclass_nce(x, y, labels, tau).item() == pytest.approx(expected, rel=1e-5)
    assert NCELoss(tau)(x, y, labels).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("members", [None, [0, 2, 3, 5], [1]])
def test_symmetric_nce_of_several_pairs_is_each_pair_both_ways(members):
    """C(x_k, y_k) = NCE(x_k, y_k) + NCE(y_k, x_k) for each of K pairs at once (values
    against the loops; gradients against separate one-direction calls)."""
    torch.manual_seed(3)
    pairs = [(torch.randn(6, 8, dtype=torch.float64, requires_grad=True),
              torch.randn(6, 8, dtype=torch.float64, requires_grad=True)) for _ in range(3)]
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    weight = None if members is None else torch.zeros(6, dtype=torch.float64).index_fill(0, torch.tensor(members), 1)
    got = symmetric_nce_pairs(pairs, labels, 0.1, weight)
    for k, (x, y) in enumerate(pairs):
        want = (naive_nce(x.detach(), y.detach(), labels.tolist(), 0.1, members)
                + naive_nce(y.detach(), x.detach(), labels.tolist(), 0.1, members))
        assert got[k].item() == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert symmetric_nce(x, y, labels, 0.1, weight).item() == pytest.approx(want, rel=1e-9, abs=1e-12)
    coefficients = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    grads = torch.autograd.grad((got * coefficients).sum(), [t for pair in pairs for t in pair])
    separate = sum(c * (multiclass_nce(x, y, labels, 0.1, weight) + multiclass_nce(y, x, labels, 0.1, weight))
                   for c, (x, y) in zip(coefficients, pairs))
    want_grads = torch.autograd.grad(separate, [t for pair in pairs for t in pair])
    for g, w in zip(grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


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


# ---------------------------------------------------------------- against the original's formulas
# The original release's loss modules, their arithmetic written out (loss/jsd_loss.py,
# loss/nce_loss.py of yanbeic/CCL). Vectorised like the originals, so that autograd gives
# the original's gradient too.

def original_jsd(p_logits, q_logits, weight=0.5):
    p, q = p_logits.softmax(dim=1), q_logits.softmax(dim=1)
    loss = (p * torch.log(p / q + EPS)).sum(1) + (q * torch.log(q / p + EPS)).sum(1)
    return loss.mean() * weight


def original_nce(f1, f2, targets, temperature):
    f1, f2 = F.normalize(f1, dim=1), F.normalize(f2, dim=1)
    negative = (targets[:, None] - targets[None, :]) != 0
    cos = 1 - 0.5 * (f1[:, None] - f2[None]).pow(2).sum(2)
    p = (cos / temperature).softmax(dim=1)
    pos = -torch.log(p + EPS) * (~negative)
    neg = -torch.log(1 - p + EPS) * negative
    return (pos.sum(1) / (~negative).sum(1) + neg.sum(1) / negative.sum(1)).mean()


def value_and_grads(loss_fn, *inputs):
    inputs = [x.detach().clone().requires_grad_(True) for x in inputs]
    value = loss_fn(*inputs)
    return value.detach(), torch.autograd.grad(value, inputs)


def assert_grads_close(got, want, rtol):
    """Every gradient entry within rtol of the largest entry of its tensor."""
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.double(), w, rtol=rtol, atol=rtol * w.abs().max().item())


def confident_logits(std, seed):
    g = torch.Generator().manual_seed(seed)
    return (std * torch.randn(16, 51, generator=g, dtype=torch.float64),
            std * torch.randn(16, 51, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("std", [5.0, 8.0])
def test_jsd_matches_the_original_on_confident_logits(std):
    z_v, z_m = confident_logits(std, seed=int(std))
    want, want_grads = value_and_grads(original_jsd, z_v, z_m)
    assert torch.isfinite(want) and all(torch.isfinite(g).all() for g in want_grads)
    # float64: the same function, up to rounding
    got, got_grads = value_and_grads(JSDLoss(0.5), z_v, z_m)
    assert got.item() == pytest.approx(want.item(), rel=1e-9)
    assert_grads_close(got_grads, want_grads, rtol=1e-9)
    # float32 inputs, as in training: within the tolerances of the float64 original
    got, got_grads = value_and_grads(JSDLoss(0.5), z_v.float(), z_m.float())
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), rel=1e-4)
    assert_grads_close(got_grads, want_grads, rtol=1e-3)
    # ε on p and q instead of on the ratio is measurably another function here
    p, q = z_v.softmax(1), z_m.softmax(1)
    other = 0.5 * ((p - q) * ((p + EPS).log() - (q + EPS).log())).sum(1).mean()
    assert other.item() != pytest.approx(want.item(), rel=1e-3)


@pytest.mark.parametrize("dtype, gap", [(torch.float64, 800.0), (torch.float32, 120.0)])
def test_jsd_stays_finite_where_the_original_is_not(dtype, gap):
    # z_v = gap·e_0 and z_m = gap·e_1: softmax underflows to exact zeros, so the original's
    # p/q is inf and 0/0. In real arithmetic the value is 2·gap per sample (ε and e^-gap
    # terms aside), and ∂/∂z_v = (e_0 - e_1)/B, ∂/∂z_m = (e_1 - e_0)/B.
    batch, classes = 4, 51
    z_v = torch.zeros(batch, classes, dtype=dtype)
    z_m = torch.zeros(batch, classes, dtype=dtype)
    z_v[:, 0] = gap
    z_m[:, 1] = gap
    assert not torch.isfinite(original_jsd(z_v, z_m, weight=1.0))
    value, (grad_v, grad_m) = value_and_grads(symmetric_kl, z_v, z_m)
    assert value.item() == pytest.approx(2 * gap, rel=1e-6)
    expected = torch.zeros(batch, classes, dtype=dtype)
    expected[:, 0], expected[:, 1] = 1 / batch, -1 / batch
    torch.testing.assert_close(grad_v, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad_m, -expected, rtol=0, atol=1e-6)
    # a masked-out sample of that kind leaves no NaN in the gradients of the others
    weight = torch.tensor([1.0, 0.0, 1.0, 1.0])
    _, grads = value_and_grads(lambda a, b: symmetric_kl(a, b, weight), z_v, z_m)
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nce_matches_the_original_on_confident_features(tau):
    # y is x plus a little noise: every p_ii is close to 1 at tau 0.1.
    g = torch.Generator().manual_seed(5)
    x = torch.randn(16, 512, generator=g, dtype=torch.float64)
    y = x + 0.3 * torch.randn(16, 512, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (16,), generator=g)
    want, want_grads = value_and_grads(lambda a, b: original_nce(a, b, labels, tau), x, y)
    assert torch.isfinite(want)
    got, got_grads = value_and_grads(lambda a, b: NCELoss(tau)(a, b, labels), x, y)
    assert got.item() == pytest.approx(want.item(), rel=1e-9)
    assert_grads_close(got_grads, want_grads, rtol=1e-7)
    got, got_grads = value_and_grads(lambda a, b: NCELoss(tau)(a, b, labels), x.float(), y.float())
    assert got.item() == pytest.approx(want.item(), rel=1e-4)
    assert_grads_close(got_grads, want_grads, rtol=1e-3)
