"""The CCL objective computes in fp32 under bf16 autocast; only the networks run in bf16.

The checks give the same tensors (the networks' outputs, as fp32 or as the bf16 that
autocast makes of them) to a computation outside and inside autocast and ask for the same
fp32 result. The networks that produce those tensors (student, image teacher) are not part
of what is compared: under autocast they do run in bf16. Without the fp32 region, CPU
autocast moves the objective by about 1e-3 relative (its matmuls run in bf16). The last
check runs a whole bf16 training step with the compiled objective against the eager one.
"""
import pytest
import torch
from torch import nn

from losses import multiclass_nce, symmetric_kl, symmetric_nce, symmetric_nce_pairs, weighted_cross_entropy
from tests.test_gradient_routing import OPTIM
from training.batch import Batch
from training.objective import TeacherInputs, ccl_objective
from training.optim import make_optimizers
from training.precision import configure_backends
from training.step import train_step
from training.teachers import build_teachers, heads

N_CLASSES, BATCH = 51, 16
TARGET = torch.tensor([0, 1, 1, 2, 3, 3, 4, 0, 5, 5, 6, 7, 7, 8, 9, 0])
AUDIO_MASK = torch.tensor([1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1], dtype=torch.float32)


def network_outputs(dtype: torch.dtype, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Student logits and features, audio and image teacher features, in `dtype`."""
    g = torch.Generator().manual_seed(0)
    outputs = {"logits": 4 * torch.randn(BATCH, N_CLASSES, generator=g),
               "features": torch.randn(BATCH, 512, generator=g).relu(),
               "audio": torch.randn(BATCH, 512, generator=g).relu() * AUDIO_MASK[:, None],
               "image": torch.randn(BATCH, 512, generator=g).relu()}
    return {k: v.to(device=device, dtype=dtype) for k, v in outputs.items()}


def in_bf16_autocast(device: str, function, *args):
    with torch.autocast(device, dtype=torch.bfloat16):
        return function(*args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_loss_gives_its_fp32_value_under_autocast(dtype):
    out = network_outputs(dtype)
    logits, v, t = out["logits"], out["features"], out["audio"]
    z_m = out["logits"].flip(0)
    losses = {
        "nce": lambda: multiclass_nce(v, t, TARGET, 0.1, AUDIO_MASK),
        "symmetric_nce": lambda: symmetric_nce(v, out["image"], TARGET, 0.1),
        "symmetric_kl": lambda: symmetric_kl(logits, z_m, AUDIO_MASK),
        "cross_entropy": lambda: weighted_cross_entropy(logits, TARGET),
        # The batched forms the objective uses: K pairs in one stack.
        "symmetric_nce_pairs": lambda: symmetric_nce_pairs([(v, t), (t, v), (v, out["image"])], TARGET, 0.1,
                                                           AUDIO_MASK),
        "symmetric_kl_stacked": lambda: symmetric_kl(torch.stack([logits, z_m]), torch.stack([z_m, logits]),
                                                     AUDIO_MASK),
    }
    for name, loss in losses.items():
        want = loss()
        got = in_bf16_autocast("cpu", loss)
        assert want.dtype == got.dtype == torch.float32, name
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0, msg=name)


def heads_and_branches(out: dict[str, torch.Tensor], device: str):
    torch.manual_seed(1)
    # The image features are given: the teacher network itself is never called.
    teachers = build_teachers(N_CLASSES, torch.device(device), audio=True, image=nn.Identity(), image_size=16)
    mask = AUDIO_MASK.to(device)
    return teachers, [TeacherInputs(teachers[0], out["audio"], mask),
                      TeacherInputs(teachers[1], out["image"], None)]


def objective_and_gradients(out: dict[str, torch.Tensor], device: str, autocast: bool):
    """(loss, terms, gradients w.r.t. the student outputs and every head parameter)."""
    teachers, branches = heads_and_branches(out, device)
    logits = out["logits"].detach().requires_grad_(True)
    features = out["features"].detach().requires_grad_(True)
    target = TARGET.to(device)
    if autocast:
        loss, terms = in_bf16_autocast(device, ccl_objective, logits, features, target, branches, 0.5)
    else:
        loss, terms = ccl_objective(logits, features, target, branches, 0.5)
    parameters = [p for t in teachers for p in t.head.parameters()]
    gradients = torch.autograd.grad(loss, [logits, features, *parameters])
    return loss.detach(), terms, gradients


def assert_objective_is_fp32_under_autocast(device: str, dtype: torch.dtype) -> None:
    out = network_outputs(dtype, device)
    want_loss, want_terms, want_grads = objective_and_gradients(out, device, autocast=False)
    got_loss, got_terms, got_grads = objective_and_gradients(out, device, autocast=True)
    assert got_loss.dtype == torch.float32
    assert got_loss.item() == pytest.approx(want_loss.item(), rel=1e-6)
    assert got_terms.keys() == want_terms.keys()
    for name in want_terms:
        assert got_terms[name].dtype == torch.float32, name
        assert got_terms[name].item() == pytest.approx(want_terms[name].item(), rel=1e-6, abs=1e-9), name
    for got, want in zip(got_grads, want_grads, strict=True):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6 * want.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_objective_with_heads_is_fp32_under_cpu_autocast(dtype):
    """CCL (AI): both NCE directions of both teachers, both divergences, the student's and
    the heads' cross-entropies, the heads themselves, and the gradients reaching the
    student outputs and the heads."""
    assert_objective_is_fp32_under_autocast("cpu", dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_objective_with_heads_is_fp32_under_cuda_autocast(dtype):
    """The same on CUDA with the backend settings training uses (no TF32 matmuls)."""
    configure_backends(torch.device("cuda"))
    assert_objective_is_fp32_under_autocast("cuda", dtype)


class TinyStudent(nn.Module):
    """(logits, features) of a clip from two linear layers: bf16 outputs under autocast."""

    def __init__(self):
        super().__init__()
        self.features = nn.Linear(3 * 2 * 4 * 4, 512)
        self.classifier = nn.Linear(512, N_CLASSES)

    def forward(self, clip):
        v = self.features(clip.flatten(1)).relu()
        return self.classifier(v), v


# On the CPU the aot_eager backend: the bf16 backward came from AOTAutograd's tracing, which
# it shares with inductor (what --compile uses), without inductor's minutes of code generation.
@pytest.mark.parametrize("device, backend", [("cpu", "aot_eager"),
                                             pytest.param("cuda", "inductor", marks=pytest.mark.cuda)])
def test_compiled_objective_in_a_bf16_step_gives_fp32_gradients(device, backend):
    """train_step under bf16 autocast with the compiled objective (--compile) gives the
    heads the gradients of the eager fp32 objective: torch.compile's backward of an
    objective called under autocast ran its matmuls in bf16 (0.3-0.6% off)."""
    device = torch.device(device)
    configure_backends(device)
    g = torch.Generator().manual_seed(2)
    out = network_outputs(torch.float32, device.type)
    batch = Batch(clip=torch.randn(BATCH, 3, 2, 4, 4, generator=g).to(device), target=TARGET.to(device),
                  audio=out["audio"], audio_weight=AUDIO_MASK.to(device), frame_index=0)
    image = out["image"]
    gradients = []
    torch._dynamo.reset()
    for objective in (ccl_objective, torch.compile(ccl_objective, backend=backend)):
        torch.manual_seed(3)
        student = TinyStudent().to(device)
        teachers = build_teachers(N_CLASSES, device, audio=True, image=nn.Identity(), image_size=16)
        teachers[1].features = lambda _: (image, None)
        optimizers = list(make_optimizers(student, heads(teachers), OPTIM).values())
        train_step(student, teachers, batch, optimizers, 0.5, torch.bfloat16, objective)
        gradients.append([p.grad for t in teachers for p in t.head.parameters()])
    for eager, compiled in zip(*gradients, strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5 * eager.abs().max().item())
