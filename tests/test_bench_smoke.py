"""The training-step benchmark runs, and its baseline computes what our step computes."""
import copy
import json

import pytest
import torch

from benchmarks import bench_train_step
from benchmarks.original_step import TrackedImageTeacher, original_step
from datasets.transforms import normalize_clip
from models import build_student
from models.image_teacher import ImageTeacher, calibrate_batchnorm
from training.batch import Batch
from training.config import OptimConfig
from training.optim import make_optimizers
from training.step import train_step
from training.teachers import build_teachers, heads

TINY = ["--device", "cpu", "--batch_size", "4", "--sample_size", "32", "--sample_duration", "4",
        "--steps", "1", "--warmup", "0"]
KEYS = {"impl", "config", "batch_size", "device", "mode", "ms_per_step", "clips_per_s",
        "peak_mem_gb", "peak_mem_kind", "torch", "device_name"}
N_CLASSES = 51


@pytest.fixture(autouse=True)
def one_thread():
    """The 2 shared cores are oversubscribed: OpenMP barriers across 2 threads then cost
    several times the arithmetic of these tiny steps."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("impl, mode", [("ours", "default"), ("original", "exact")])
def test_one_cell_prints_one_json_line(impl, mode, capsys):
    assert bench_train_step.main([*TINY, "--config", "ai", "--impl", impl]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert KEYS <= record.keys()
    assert (record["impl"], record["config"], record["mode"], record["device"]) == (impl, "ai", mode, "cpu")
    assert record["peak_mem_kind"] == "cpu_peak_rss" and record["peak_mem_gb"] > 0
    assert record["clips_per_s"] == pytest.approx(4 * 1000 / record["ms_per_step"], rel=1e-2)


def test_user_error_is_one_line(capsys):
    assert bench_train_step.main([*TINY, "--impl", "original", "--compile"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_ratios_divide_ours_by_the_original_of_the_same_config():
    records = [{"impl": "original", "config": "ai", "mode": "exact", "clips_per_s": 40.0},
               {"impl": "ours", "config": "ai", "mode": "default", "clips_per_s": 140.0},
               {"impl": "ours", "config": "ai", "mode": "exact", "clips_per_s": 80.0},
               {"impl": "original", "config": "base", "mode": "exact", "clips_per_s": 300.0},
               {"impl": "ours", "config": "base", "mode": "exact", "clips_per_s": 330.0}]
    assert bench_train_step.ratios(records) == {"ai": {"default": 3.5, "exact": 2.0},
                                                "base": {"exact": 1.1}}


def test_every_cell_of_all_is_a_valid_command():
    args = bench_train_step.build_parser().parse_args([*TINY, "--all", "--compile"])
    cells = bench_train_step.cell_commands(args)
    assert len(cells) == 4 * 4
    for cell in cells:
        bench_train_step.check_args(bench_train_step.build_parser().parse_args(cell))


def test_original_step_updates_parameters_like_train_step():
    """One CCL (AI) step, fp32 on CPU: the original's multi-backward structure and our single
    backward must leave the same student, heads and BatchNorm statistics (SPEC §3)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    clip = normalize_clip(torch.randint(0, 256, (4, 3, 4, 32, 32), generator=g, dtype=torch.uint8))
    has_audio = torch.tensor([1.0, 0.0, 1.0, 1.0])
    batch = Batch(clip=clip, target=torch.tensor([3, 7, 3, 7]),
                  audio=torch.randn(4, 512, generator=g) * has_audio[:, None], audio_weight=has_audio,
                  frame_index=2)
    network = calibrate_batchnorm(ImageTeacher(), clip.transpose(1, 2).flatten(0, 1))
    student = build_student("r21d", 18, N_CLASSES)
    teachers = build_teachers(True, True, N_CLASSES, network, 32, torch.device("cpu"))
    ref_student = copy.deepcopy(student)
    ref_heads = {t.name: copy.deepcopy(t.head) for t in teachers}
    # A large lr makes a routing error visible in the parameters, not only in the gradients.
    opt = OptimConfig(learning_rate=0.1, momentum=0.9, dampening=0.0, weight_decay=5e-4, nesterov=False,
                      milestones=(150, 225), loss_weight=0.5)
    before = {name: p.detach().clone() for name, p in student.named_parameters()}

    train_step(student, teachers, batch, list(make_optimizers(student, heads(teachers), opt).values()), 0.5)
    original_step(ref_student, ref_heads, TrackedImageTeacher(network), batch,
                  make_optimizers(ref_student, torch.nn.ModuleDict(ref_heads), opt), 0.5)

    ours = dict(student.state_dict())
    ours.update({f"{t.name}.{k}": v for t in teachers for k, v in t.head.state_dict().items()})
    ref = dict(ref_student.state_dict())
    ref.update({f"{name}.{k}": v for name, head in ref_heads.items() for k, v in head.state_dict().items()})
    assert ours.keys() == ref.keys()
    for name in ours:
        assert torch.allclose(ours[name].float(), ref[name].float(), rtol=1e-4, atol=1e-6), name
    for name, start in before.items():
        update, ref_update = ours[name] - start, ref[name] - start
        assert ref_update.norm() > 0, name
        assert (update - ref_update).norm() <= 1e-3 * ref_update.norm(), name


def test_the_step_profile_counts_top_level_operators(capsys):
    """profile_step.py on a CPU cell prints its JSON line, and counts an operator called
    inside another (linear → addmm) once."""
    from torch.profiler import ProfilerActivity, profile

    from benchmarks import profile_step
    x, w = torch.randn(3, 4), torch.randn(5, 4)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        torch.relu(torch.nn.functional.linear(torch.add(x, 1), w))
    assert sorted(e.name for e in prof.events() if profile_step.is_top_level_op(e)) == \
        ["aten::add", "aten::linear", "aten::relu"]
    assert profile_step.main([*TINY, "--config", "base", "--steps", "2"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["profile"] == "train_step" and record["kernels"] == 0 and record["kernel_ms"] == 0
    assert record["host_ops"] > 100 and record["wall_ms"] > 0
