"""One single-backward step equals the naive per-loss gradients of SPEC §3."""
import copy

import pytest
import torch
from torch import nn

from losses import JSDLoss, NCELoss
from models.factory import build_student
from training.batch import Batch
from training.config import OptimConfig
from training.objective import ccl_objective
from training.optim import make_optimizers
from training.step import train_step
from training.teachers import build_teachers, heads

N_CLASSES = 5


class TinyImageNet(nn.Module):
    """Frozen stand-in for the image teacher (same interface, D-d output)."""

    def __init__(self, dim: int = 512):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, dim))
        self.requires_grad_(False)

    def forward(self, x):
        return self.net(x)


OPTIM = OptimConfig(learning_rate=0.1, momentum=0.9, dampening=0.0, weight_decay=5e-4, nesterov=False,
                    milestones=(150, 225), loss_weight=0.5)


def make_batch(seed: int, with_audio: list[int], audio_dim: int = 512) -> Batch:
    g = torch.Generator().manual_seed(seed)
    b = len(with_audio)
    return Batch(clip=torch.randn(b, 3, 4, 16, 16, generator=g, dtype=torch.float64),
                 target=torch.tensor([0, 1, 1, 2, 3, 3, 4, 0][:b]),
                 audio=torch.randn(b, audio_dim, generator=g, dtype=torch.float64) * torch.tensor(with_audio)[:, None],
                 audio_weight=torch.tensor(with_audio, dtype=torch.float64),
                 frame_index=2)


def naive_gradients(student, teacher_list, batch, loss_weight):
    """SPEC §3 written the original's way: boolean selection of the audio samples, every
    term on the full graph, student ← ∇L_v, head ← ∇(L_m + L_v). With a D ≠ 512 teacher the
    student's feature enters C(·, m) and C(·, t) as P·v, P the head's `projection` (a head
    parameter like the others)."""
    ce = nn.CrossEntropyLoss()
    jsd = JSDLoss(0.5)
    logits, v = student(batch.clip)
    y = batch.target
    l_v = ce(logits, y)
    l_m_total = 0
    w = 1.0 if len(teacher_list) == 1 else loss_weight
    for teacher in teacher_list:
        nce = NCELoss(teacher.temperature)
        t, weight = teacher.features(batch)
        keep = torch.ones(len(y), dtype=torch.bool) if weight is None else weight > 0
        t_k, v_k, z_k, y_k = t[keep], v[keep], logits[keep], y[keep]
        z_m, m = teacher.head(t_k, v_k)
        projection = teacher.head.projection
        assert (projection is None) == (t.shape[1] == 512)
        p_k = v_k if projection is None else v_k @ projection.weight.T
        contrast_v = nce(p_k, m, y_k) + nce(m, p_k, y_k) + nce(p_k, t_k, y_k) + nce(t_k, p_k, y_k)
        contrast_m = nce(p_k, m, y_k) + nce(m, p_k, y_k) + nce(m, t_k, y_k) + nce(t_k, m, y_k)
        l_v = l_v + w * (contrast_v + jsd(z_k, z_m))
        l_m_total = l_m_total + ce(z_m, y_k) + contrast_m + jsd(z_k, z_m)
    student_params = list(student.parameters())
    head_params = [p for teacher in teacher_list for p in teacher.head.parameters()]
    g_student = torch.autograd.grad(l_v, student_params, retain_graph=True)
    g_heads = torch.autograd.grad(l_v + l_m_total, head_params) if head_params else []
    return list(zip(student_params, g_student)) + list(zip(head_params, g_heads))


def configure(config: str, audio_dim: int = 512, image_dim: int = 512):
    """Student and teachers in float64, so that summation order cannot hide a routing error
    behind rounding."""
    torch.manual_seed(0)
    student = build_student("r21d", 18, N_CLASSES).double()
    use_audio, use_image = {"base": (False, False), "a": (True, False), "i": (False, True), "ai": (True, True)}[config]
    teacher_list = build_teachers(N_CLASSES, torch.device("cpu"), audio=use_audio,
                                  image=TinyImageNet(image_dim).double() if use_image else None, image_size=16,
                                  audio_dim=audio_dim, image_dim=image_dim)
    for teacher in teacher_list:
        teacher.head.double()
    return student, teacher_list


@pytest.mark.parametrize("config", ["base", "a", "i", "ai"])
def test_single_backward_step_equals_naive_routing(config):
    assert_step_equals_naive_routing(config, ccl_objective)


# D ≠ 512: a 2048-d audio embedding (PANNs Cnn14) and a 768-d image teacher (ViT-B/16).
@pytest.mark.parametrize("config,audio_dim,image_dim",
                         [("a", 2048, 512), ("i", 512, 768), ("ai", 2048, 768), ("ai", 512, 768)])
def test_single_backward_step_equals_naive_routing_for_other_dims(config, audio_dim, image_dim):
    assert_step_equals_naive_routing(config, ccl_objective, audio_dim=audio_dim, image_dim=image_dim)


@pytest.mark.parametrize("config", ["base", "ai"])
def test_compiled_objective_keeps_the_routing(config):
    # --compile runs the objective through torch.compile (inductor): the detached second
    # head pass and the audio weights must survive it, and the baseline's loss must keep
    # its graph. Two steps: the second reuses the compiled graph.
    torch._dynamo.reset()
    assert_step_equals_naive_routing(config, torch.compile(ccl_objective), steps=2)


def assert_step_equals_naive_routing(config, objective, steps=1, audio_dim=512, image_dim=512, target=None):
    """`steps` steps of train_step against the naive gradients; `target` replaces the
    batches' labels."""
    batch = make_batch(1, [1, 1, 0, 1, 1, 0, 1, 1], audio_dim)
    student, teacher_list = configure(config, audio_dim, image_dim)
    ref_student, ref_teachers = copy.deepcopy(student), copy.deepcopy(teacher_list)
    ref_teachers_by_name = {t.name: t for t in ref_teachers}
    initial_heads = [p.detach().clone() for t in teacher_list for p in t.head.parameters()]

    optimizers = make_optimizers(student, heads(teacher_list), OPTIM)
    ref_optimizers = make_optimizers(ref_student, heads(ref_teachers), OPTIM)
    for step in range(steps):
        step_batch = batch if step == 0 else make_batch(2, [0, 1, 1, 1, 0, 1, 1, 1], audio_dim)
        if target is not None:
            step_batch.target = target
        result = train_step(student, teacher_list, step_batch, list(optimizers.values()),
                            loss_weight=0.5, objective=objective)
        assert result.finite
        for param, grad in naive_gradients(ref_student, ref_teachers, step_batch, 0.5):
            param.grad = grad.clone()
        for optimizer in ref_optimizers.values():
            optimizer.step()

    for (name, p), (_, q) in zip(student.named_parameters(), ref_student.named_parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-7), name
    for name, teacher in ((t.name, t) for t in teacher_list):
        for p, q in zip(teacher.head.parameters(), ref_teachers_by_name[name].head.parameters()):
            assert torch.allclose(p, q, rtol=1e-5, atol=1e-7), name
    # Every head parameter moved by more than the tolerance above: otherwise the comparison
    # could not tell a routing that drops L_m (or never steps a head) from the right one.
    heads_after = [p.detach() for t in teacher_list for p in t.head.parameters()]
    for before, after in zip(initial_heads, heads_after, strict=True):
        assert not torch.allclose(after, before, rtol=1e-5, atol=1e-7)


def test_plain_single_backward_differs_from_exact_routing():
    """The detach matters: backward of L_v + L_m without it gives other student gradients."""
    batch = make_batch(2, [1] * 8)
    student, teacher_list = configure("a")
    naive = dict((id(p), g) for p, g in naive_gradients(student, teacher_list, batch, 0.5))
    logits, v = student(batch.clip)
    t, _ = teacher_list[0].features(batch)
    z_m, m = teacher_list[0].head(t, v)
    nce, jsd, ce = NCELoss(0.5), JSDLoss(0.5), nn.CrossEntropyLoss()
    y = batch.target
    l_v = ce(logits, y) + nce(v, m, y) + nce(m, v, y) + nce(v, t, y) + nce(t, v, y) + jsd(logits, z_m)
    l_m = ce(z_m, y) + nce(v, m, y) + nce(m, v, y) + nce(m, t, y) + nce(t, m, y) + jsd(logits, z_m)
    grads = torch.autograd.grad(l_v + l_m, list(student.parameters()))
    diff = sum((g - naive[id(p)]).norm() for p, g in zip(student.parameters(), grads))
    assert diff > 1e-3


def test_batch_without_any_audio_trains_on_cross_entropy_only():
    batch = make_batch(3, [0] * 8)
    student, teacher_list = configure("a")
    optimizers = make_optimizers(student, heads(teacher_list), OPTIM)
    result = train_step(student, teacher_list, batch, list(optimizers.values()), loss_weight=0.5)
    assert result.finite
    for name in ("audio/contrast", "audio/divergence", "audio/head"):
        assert result.terms[name].item() == 0.0
    assert result.terms["student"].item() == pytest.approx(result.terms["ce"].item())


def test_single_class_batch_equals_naive_routing():
    """Every pair a positive: the NCE rows have no negatives (only their positive term
    counts), and the step is still the naive one."""
    assert_step_equals_naive_routing("ai", ccl_objective, target=torch.zeros(8, dtype=torch.long))


def test_non_finite_loss_skips_every_step():
    batch = make_batch(5, [1] * 8)
    batch.audio[0, 0] = float("nan")
    student, teacher_list = configure("a")
    before = [p.clone() for p in student.parameters()]
    optimizers = make_optimizers(student, heads(teacher_list), OPTIM)
    result = train_step(student, teacher_list, batch, list(optimizers.values()), loss_weight=0.5)
    assert not result.finite
    assert all(torch.equal(p, q) for p, q in zip(before, student.parameters()))


def test_skipped_step_leaves_batchnorm_statistics_as_they_were():
    # A non-finite clip poisons the forward pass itself: BatchNorm's running statistics
    # would keep the NaN and every later evaluation would be NaN.
    batch = make_batch(6, [1] * 8)
    batch.clip[0, 0, 0, 0, 0] = float("inf")
    student, teacher_list = configure("base")
    before = {name: b.clone() for name, b in student.named_buffers()}
    optimizers = make_optimizers(student, heads(teacher_list), OPTIM)
    result = train_step(student, teacher_list, batch, list(optimizers.values()), loss_weight=0.5)
    assert not result.finite
    for name, buffer in student.named_buffers():
        assert torch.equal(buffer, before[name]), name
    # and a finite step still updates them
    result = train_step(student, teacher_list, make_batch(7, [1] * 8), list(optimizers.values()), loss_weight=0.5)
    assert result.finite
    assert not torch.equal(dict(student.named_buffers())["bn1.running_mean"], before["bn1.running_mean"])
