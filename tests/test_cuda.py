"""The CUDA path, each part against an oracle (skipped without a GPU: `pytest -m cuda`).

Tolerances. The oracle of a step is the same step in float64 on the GPU. On an untrained
R(2+1)D with batch 8, BatchNorm's backward cancels most of each gradient, so rounding of
any kind moves the student's update by much more than the unit roundoff (measured on an
H100: 12% of the update's norm with TF32 convolutions, 50% in bf16 autocast; bf16 has 8
significant bits, u = 2^-8 ≈ 0.4%). A wrong routing (one backward of L_v + Σ L_m without
the detach, SPEC §3) moves it by about 68%, so a bound on the error alone cannot tell the
two apart. The routing is tested along its own direction instead: how far a mode's update
moved from the oracle's toward the wrong routing's, as a fraction of the way (0: right
routing, 1: wrong; rounding noise is nearly orthogonal to that direction); a mode passes
under a quarter of the way, with its loss within 2% (losses are fp32) and each update
within a bound above its measured rounding. fp32 comparisons of two implementations of
the same arithmetic (single vs naive backward, DataParallel vs plain) run with TF32 off
and allow 1% of the update's norm. Every measured error is printed on a `MEASURED` line
(benchmarks/gpu_check.sh keeps them).
"""
import copy
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import main as entry
from datasets.synthetic import write_synthetic_dataset
from losses import symmetric_kl, symmetric_nce, weighted_cross_entropy
from models import build_student
from models.image_teacher import ImageTeacher, calibrate_batchnorm
from tests.conftest import read_log
from tests.test_gradient_routing import naive_gradients
from training.batch import to_device_batch
from training.config import OptimConfig
from training.objective import DIVERGENCE_WEIGHT, ccl_objective
from training.optim import make_optimizers
from training.precision import configure_backends, speed_mode
from training.step import train_step
from training.teachers import build_teachers, heads

pytestmark = pytest.mark.cuda

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda")
N_CLASSES = 10
BATCH = 8
DURATION, SIZE = 8, 64
MEAN, STD = [0.4345, 0.4051, 0.3775], [0.2768, 0.2713, 0.2737]
LOSS_WEIGHT = 0.5
LOSS_RTOL = 0.02
ROUTING_MARGIN = 0.25     # the fraction of the way toward the wrong routing's update
UPDATE_RTOL = {"student.": 0.75, "audio.": 0.1, "image.": 0.1}   # a mode's update vs float64
FP32_RTOL = 1e-2
GROUPS = ("student.", "audio.", "image.")


# The paper's settings (SPEC §4); a larger rate makes 3 steps of a fresh network chaotic
# enough to amplify rounding beyond any useful bound.
OPTIM = OptimConfig(learning_rate=0.001, momentum=0.9, dampening=0.0, weight_decay=5e-4, nesterov=False,
                    milestones=(150, 225), loss_weight=LOSS_WEIGHT)


@dataclass
class Models:
    """Initial CPU weights shared by the setups compared in a test."""
    student: nn.Module
    network: ImageTeacher | None
    teachers: list


@dataclass
class Setup:
    """One training setup as `training/build.py` builds it for a device and mode."""
    student: nn.Module
    teachers: list
    optimizers: list
    autocast_dtype: torch.dtype | None
    channels_last: bool
    dtype: torch.dtype
    model: nn.Module          # the student as the step calls it (compiled or wrapped)
    objective: object = ccl_objective

    def batch(self, sample: dict, frame_index: int):
        batch = to_device_batch(sample, self.device, MEAN, STD, frame_index, self.channels_last)
        batch.clip, batch.audio = batch.clip.to(self.dtype), batch.audio.to(self.dtype)
        return batch

    def step(self, sample: dict, frame_index: int):
        return train_step(self.model, self.teachers, self.batch(sample, frame_index), self.optimizers,
                          LOSS_WEIGHT, self.autocast_dtype, self.objective)

    @property
    def device(self) -> torch.device:
        return next(self.student.parameters()).device

    def parameters(self) -> dict[str, Tensor]:
        named = {f"student.{n}": p for n, p in self.student.named_parameters()}
        named.update({f"{t.name}.{n}": p for t in self.teachers for n, p in t.head.named_parameters()})
        return {n: p.detach().double().clone() for n, p in named.items()}


def initial_models(config: str = "ai", n_classes: int = N_CLASSES) -> Models:
    """Student, image teacher network and heads with fixed weights, on the CPU; the image
    teacher is a random ResNet-34 with BatchNorm calibrated on fixed frames (finite
    features without a weights file)."""
    torch.manual_seed(0)
    student = build_student("r21d", 18, n_classes)
    network = None
    if config in ("i", "ai"):
        frames = torch.randn(32, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
        network = calibrate_batchnorm(ImageTeacher(), frames)
    teachers = build_teachers(config in ("a", "ai"), config in ("i", "ai"), n_classes, network, SIZE,
                              torch.device("cpu"))
    return Models(student, network, teachers)


def setup(models: Models, mode: str, compile: bool = False, objective=ccl_objective) -> Setup:
    """A copy of `models` on the GPU as training runs it in `mode`: "default" (bf16
    autocast, channels_last_3d), "exact" (`--exact`: fp32) or "float64" (the oracle), with
    fused SGD; `compile` as `--compile` (student, image teacher network, objective)."""
    dtype = torch.float64 if mode == "float64" else torch.float32
    speed = speed_mode(CUDA, exact=mode != "default")
    configure_backends(CUDA)
    student = copy.deepcopy(models.student).to(CUDA, dtype)
    if speed.channels_last:
        student = student.to(memory_format=torch.channels_last_3d)
    network = copy.deepcopy(models.network)
    if network is not None:
        network = network.to(dtype)
        if compile:
            network = torch.compile(network)
    names = [t.name for t in models.teachers]
    n_classes = models.student.linear.out_features
    teachers = build_teachers("audio" in names, "image" in names, n_classes, network, SIZE, CUDA)
    for teacher, initial in zip(teachers, models.teachers):
        teacher.head.load_state_dict(initial.head.state_dict())
        teacher.head.to(dtype)
    optimizers = list(make_optimizers(student, heads(teachers), OPTIM, fused=True).values())
    return Setup(student, teachers, optimizers, speed.autocast_dtype, speed.channels_last, dtype,
                 model=torch.compile(student) if compile else student,
                 objective=torch.compile(objective) if compile else objective)


def batches(count: int = 3, batch: int = BATCH, duration: int = DURATION, size: int = SIZE
            ) -> list[dict]:
    """`count` batches in the DESIGN item format, on the GPU. Clips are smooth random
    fields plus pixel noise (closer to video than uniform noise); labels repeat; the audio
    masks differ (batch 0: some samples without audio; 1: all with; 2: none)."""
    out = []
    for k in range(count):
        g = torch.Generator().manual_seed(10 + k)
        coarse = torch.rand(batch * 3, duration, 4, 4, generator=g)
        smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        noise = 0.05 * torch.randn(smooth.shape, generator=g)
        clip = ((smooth + noise).clamp(0, 1) * 255).round().to(torch.uint8)
        clip = clip.view(batch, 3, duration, size, size)
        has_audio = [torch.rand(batch, generator=g) >= 0.3, torch.ones(batch), torch.zeros(batch)][k % 3]
        has_audio = has_audio.float()
        out.append({"clip": clip, "target": torch.arange(batch) % (batch // 2),
                    "audio": torch.randn(batch, 512, generator=g) * has_audio[:, None],
                    "audio_weight": has_audio})
    return [{key: value.to(CUDA) for key, value in sample.items()} for sample in out]


def updates(before: dict[str, Tensor], after: dict[str, Tensor], prefix: str) -> Tensor:
    """The concatenated parameter change of one module group (names starting with prefix)."""
    return torch.cat([(after[n] - before[n]).flatten() for n in before if n.startswith(prefix)])


def relative(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


def toward_wrong_routing(update: Tensor, oracle: Tensor, wrong: Tensor) -> float:
    """How far `update` moved from `oracle` toward `wrong`, as a fraction of the way:
    <u - o, w - o> / |w - o|^2 (0: the oracle's routing, 1: the wrong routing's)."""
    direction = wrong - oracle
    return float(torch.dot(update - oracle, direction) / torch.dot(direction, direction))


def measured(test: str, **values) -> None:
    print("MEASURED", json.dumps({"test": test, **values}), flush=True)


def objective_without_detach(logits, features, target, branches, loss_weight):
    """The wrong routing SPEC §3 warns about: L_v + Σ L_m with one backward and the
    student's outputs NOT detached in L_m, so the student also receives ∇L_m."""
    distill_weight = 1.0 if len(branches) == 1 else loss_weight
    loss = weighted_cross_entropy(logits, target)
    for branch in branches:
        t, w, tau = branch.features, branch.weight, branch.teacher.temperature
        z_m, m = branch.teacher.head(t, features)
        divergence = DIVERGENCE_WEIGHT * symmetric_kl(logits, z_m, w)
        loss = loss + distill_weight * (symmetric_nce(features, m, target, tau, w)
                                        + symmetric_nce(features, t, target, tau, w) + divergence)
        loss = loss + (weighted_cross_entropy(z_m, target, w) + symmetric_nce(features, m, target, tau, w)
                       + symmetric_nce(m, t, target, tau, w) + divergence)
    return loss, {}


@pytest.fixture(autouse=True)
def restore_backends():
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark)
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
     torch.backends.cudnn.benchmark) = flags


def fp32_without_tf32() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def one_step(models: Models, mode: str, sample: dict, objective=ccl_objective
             ) -> tuple[float, dict[str, Tensor], dict[str, Tensor]]:
    """(loss, parameters before, parameters after) of one step from `models` in `mode`."""
    run = setup(models, mode, objective=objective)
    before = run.parameters()
    result = run.step(sample, 3)
    assert result.finite, mode
    return float(result.loss), before, run.parameters()


# ---------------------------------------------------------------- the step

def test_exact_step_on_cuda_equals_the_naive_routing():
    """--exact on CUDA (TF32 off): our single-backward step equals SPEC §3's per-loss
    gradients taken the original's way."""
    models = initial_models()
    sample = batches(1)[0]
    ours, reference = setup(models, "exact"), setup(models, "exact")
    fp32_without_tf32()
    before = ours.parameters()
    assert ours.step(sample, 3).finite
    for p, g in naive_gradients(reference.student, reference.teachers, reference.batch(sample, 3), LOSS_WEIGHT):
        p.grad = g
    for optimizer in reference.optimizers:
        optimizer.step()
    got, want = ours.parameters(), reference.parameters()
    errors = {prefix: relative(updates(before, got, prefix), updates(before, want, prefix)) for prefix in GROUPS}
    measured("exact_vs_naive", **errors)
    for prefix, error in errors.items():
        assert error < FP32_RTOL, (prefix, error)


def test_default_and_exact_modes_keep_the_routing():
    """bf16 autocast + channels_last_3d + fused SGD, and --exact (TF32 convolutions), each
    against the float64 step from the same weights and batch: losses close, each module
    group's update close and far nearer the oracle's routing than the wrong one's, heads
    moving."""
    models = initial_models()
    sample = batches(1)[0]
    loss_64, before, oracle = one_step(models, "float64", sample)
    _, _, wrong = one_step(models, "float64", sample, objective_without_detach)
    wrong_error = relative(updates(before, wrong, "student."), updates(before, oracle, "student."))
    assert wrong_error > 0.1, wrong_error      # the oracle can tell the routings apart
    for mode in ("exact", "default"):
        loss, _, after = one_step(models, mode, sample)
        errors, shifts = {}, {}
        for prefix in GROUPS:
            got, want, bad = (updates(before, params, prefix) for params in (after, oracle, wrong))
            errors[prefix] = relative(got, want)
            if relative(bad, want) > 0.01:     # groups the wrong routing moves differently
                shifts[prefix] = toward_wrong_routing(got, want, bad)
        measured("mode_vs_float64", mode=mode, loss=loss, loss_float64=loss_64, wrong_routing=wrong_error,
                 **errors, toward_wrong_routing=shifts)
        assert abs(loss - loss_64) <= LOSS_RTOL * abs(loss_64), (mode, loss, loss_64)
        assert "student." in shifts
        for prefix, shift in shifts.items():
            assert abs(shift) < ROUTING_MARGIN, (mode, prefix, shift)
        for prefix, error in errors.items():
            assert error < UPDATE_RTOL[prefix], (mode, prefix, error)
            assert all(not torch.equal(before[n], after[n]) for n in before if n.startswith(prefix)), prefix


def test_compiled_step_matches_eager_without_recompiling():
    """--compile (student, image teacher, objective) against eager, both in the default mode,
    over 3 steps whose audio masks differ (some, all, no samples with audio): the losses
    close, nothing recompiled after the first step, and the updates as close as bf16
    allows: two bf16 computations of the same steps differ by about √2 times what either
    differs from fp32, so the bound is twice the eager bf16 run's distance to the eager
    --exact run (plus 1% of the update's norm). At the benchmark's CCL (AI) batch-16
    shapes, so benchmarks/gpu_check.sh's compile cell finds these graphs in inductor's
    cache."""
    import torch._dynamo
    models = initial_models(n_classes=51)
    samples = batches(3, batch=16, duration=16, size=112)
    torch._dynamo.reset()
    eager, compiled, exact = setup(models, "default"), setup(models, "default", compile=True), setup(models, "exact")
    before = eager.parameters()
    for k, sample in enumerate(samples):
        torch._dynamo.config.error_on_recompile = k > 0
        try:
            got = compiled.step(sample, k)
        finally:
            torch._dynamo.config.error_on_recompile = False
        want = eager.step(sample, k)
        assert exact.step(sample, k).finite
        assert got.finite and want.finite, k
        assert abs(float(got.loss) - float(want.loss)) <= LOSS_RTOL * abs(float(want.loss)), k
    got, want, fp32 = compiled.parameters(), eager.parameters(), exact.parameters()
    errors = {prefix: relative(updates(before, got, prefix), updates(before, want, prefix)) for prefix in GROUPS}
    rounding = {prefix: relative(updates(before, want, prefix), updates(before, fp32, prefix)) for prefix in GROUPS}
    measured("compile_vs_eager_3_steps", **errors, eager_bf16_vs_fp32=rounding)
    for prefix, error in errors.items():
        assert error < 2 * rounding[prefix] + 0.01, (prefix, error, rounding[prefix])


def test_non_finite_step_changes_nothing_on_cuda():
    """After a good step (momentum buffers exist), a step with a NaN audio feature and one
    with an inf pixel leave parameters, fused-SGD momentum and BatchNorm statistics as they
    were; the next good step goes through."""
    run = setup(initial_models(), "default")
    good, poisoned_audio, poisoned_clip = batches(3)
    assert run.step(good, 0).finite
    poisoned_audio = dict(poisoned_audio, audio=poisoned_audio["audio"].clone())
    poisoned_audio["audio"][0, 0] = float("nan")
    poisoned_clip = dict(poisoned_clip, clip=poisoned_clip["clip"].float())
    poisoned_clip["clip"][0, 0, 0, 0, 0] = float("inf")

    def state() -> dict[str, Tensor]:
        snapshot = {f"p.{n}": p.detach().clone() for n, p in run.student.named_parameters()}
        snapshot.update({f"b.{n}": b.clone() for n, b in run.student.named_buffers()})
        for i, optimizer in enumerate(run.optimizers):
            for j, p in enumerate(p for g in optimizer.param_groups for p in g["params"]):
                snapshot[f"m.{i}.{j}"] = optimizer.state[p]["momentum_buffer"].clone()
        return snapshot

    for poisoned in (poisoned_audio, poisoned_clip):
        expected = state()
        assert not run.step(poisoned, 1).finite
        for name, value in state().items():
            assert torch.equal(value, expected[name]), name
    assert run.step(good, 2).finite


def test_data_parallel_on_one_gpu_equals_the_plain_step():
    """nn.DataParallel around the student on one visible GPU takes the same step as the
    bare student (fp32, TF32 off)."""
    models = initial_models()
    sample = batches(1)[0]
    plain, wrapped = setup(models, "exact"), setup(models, "exact")
    wrapped.model = nn.DataParallel(wrapped.student, device_ids=[0])
    fp32_without_tf32()
    before = plain.parameters()
    assert plain.step(sample, 2).finite and wrapped.step(sample, 2).finite
    got, want = wrapped.parameters(), plain.parameters()
    for prefix in GROUPS:
        assert relative(updates(before, got, prefix), updates(before, want, prefix)) < FP32_RTOL, prefix


def test_image_teacher_under_autocast_matches_fp32():
    """The frozen ResNet-34 in bf16 autocast: finite features, each within 10% (relative
    norm; 36 layers of 8-bit rounding, measured 7% on an H100) of the fp32 features and
    pointing the same way (cosine > 0.99)."""
    network = initial_models("i").network.to(CUDA)
    frames = torch.randn(16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5)).to(CUDA)
    fp32_without_tf32()
    want = network(frames)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = network(frames).float()
    error = float(((got - want).norm(dim=1) / want.norm(dim=1)).max())
    cosine = float(F.cosine_similarity(got, want, dim=1).min())
    measured("image_teacher_bf16", max_relative_error=error, min_cosine=cosine)
    assert torch.isfinite(got).all()
    assert error < 0.1 and cosine > 0.99


# ---------------------------------------------------------------- main.py on CUDA

@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict[str, Path]:
    data = write_synthetic_dataset(tmp_path_factory.mktemp("cuda") / "data", n_videos=24, n_frames=20,
                                   n_classes=4, seed=0)
    return {"video_path": data.video_path, "annotation_path": data.annotation_path,
            "audio_path": data.audio_path}


def run_options(data: dict[str, Path], result: Path, *extra: str) -> list[str]:
    return ["--video_path", str(data["video_path"]), "--audio_path", str(data["audio_path"]),
            "--annotation_path", str(data["annotation_path"]), "--result_path", str(result),
            "--n_classes", "4", "--sample_size", "32", "--sample_duration", "8", "--batch_size", "6",
            "--n_threads", "2", "--learning_rate", "0.01", "--no-tensorboard", "--use_audio",
            "--use_image", "--allow_untrained_teacher", "--n_epochs", "2", *extra]


def test_ddp_with_nccl_in_one_process_trains_like_a_single_process(synthetic, tmp_path):
    """`torchrun --nproc_per_node 1 main.py --distributed` (NCCL) against plain main.py,
    both --exact on CUDA: the same epochs, losses equal to cuDNN's nondeterminism."""
    single = tmp_path / "single"
    assert entry.main(run_options(synthetic, single, "--exact")) == 0
    ddp = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "1", str(REPO / "main.py"), "--distributed",
                           *run_options(synthetic, ddp, "--exact")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    want, got = read_log(single / "train.log"), read_log(ddp / "train.log")
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want] == ["1", "2"]
    for g, w in zip(got, want):
        assert float(g["loss"]) == pytest.approx(float(w["loss"]), rel=1e-2), (g, w)


def test_inference_and_retrieval_on_cuda_equal_the_cpu(synthetic, tmp_path):
    """A trained checkpoint evaluated on CUDA (--exact, TF32 off: fp32 like the CPU) and on
    the CPU: the same video scores to 1e-4 and the same retrieval metrics."""
    fp32_without_tf32()
    train = tmp_path / "train"
    assert entry.main(run_options(synthetic, train, "--no_cuda", "--n_epochs", "1")) == 0
    results = {}
    for name, extra in (("cpu", ["--no_cuda"]), ("cuda", ["--exact"])):
        out = tmp_path / name
        assert entry.main(run_options(synthetic, out, *extra, "--no_train", "--no_val", "--inference",
                                      "--retrieval", "--resume_path", str(train / "save_last.pth"))) == 0
        results[name] = (json.loads((out / "val.json").read_text())["results"],
                         json.loads((out / "retrieval.json").read_text()))
    (cpu_scores, cpu_retrieval), (cuda_scores, cuda_retrieval) = results["cpu"], results["cuda"]
    assert sorted(cpu_scores) == sorted(cuda_scores)
    for video, predictions in cpu_scores.items():
        want = {p["label"]: p["score"] for p in predictions}
        got = {p["label"]: p["score"] for p in cuda_scores[video]}
        for label, score in want.items():
            assert got.get(label, 0.0) == pytest.approx(score, abs=1e-4), (video, label)
    for key in ("R@1", "R@5", "R@10", "mAP"):
        assert cuda_retrieval[key] == pytest.approx(cpu_retrieval[key], abs=1e-6), key
