"""Multi-process training keeps the single-process semantics of SPEC §4 (gloo on the CPU).

Two ranks each get half of a global batch. The oracle is one process that runs the student
on each half separately (so BatchNorm statistics are per half, as per rank under DDP),
concatenates the outputs and computes every loss over the whole batch, with no gather.
The unit checks run in one pair of spawned processes (`ranks` fixture); the end-to-end
checks launch `torchrun ... main.py --distributed` on a tiny generated dataset.
"""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from datasets import build_loader
from datasets.transforms import normalize_clip
from models.factory import build_student
from tests.conftest import read_log
from tests.test_gradient_routing import N_CLASSES, OPTIM, configure
from training.batch import Batch
from training.distributed import broadcast_from_main, gather_with_grad
from training.engine import validate
from training.objective import TeacherInputs, ccl_objective
from training.optim import make_optimizers
from training.precision import SpeedMode
from training.step import train_step
from training.teachers import heads

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is unavailable")

REPO = Path(__file__).resolve().parents[1]
WORLD = 2
GLOBAL_BATCH = 8
LOSS_WEIGHT = 0.5
RTOL, ATOL = 1e-5, 1e-8
CONFIGS = {"base": 1, "ai": 2}        # configuration → SGD steps taken
VAL_ITEMS = 5                          # uneven over 2 ranks: 3 and 2 items
MEAN, STD = (0.4, 0.4, 0.4), (0.25, 0.25, 0.25)


def loopback_env() -> dict[str, str]:
    """Keep gloo's connections on the loopback interface."""
    return {"GLOO_SOCKET_IFNAME": "lo"} if Path("/sys/class/net/lo").exists() else {}


def global_batch(step: int, dtype=torch.float64) -> Batch:
    """Step k's global batch of 8; the samples without audio fall unevenly on the halves
    (1 and 2 in step 0, 0 and 3 in step 1)."""
    g = torch.Generator().manual_seed(100 + step)
    with_audio = [[1, 0, 1, 1, 0, 1, 0, 1], [1, 1, 1, 1, 0, 0, 0, 1]][step]
    target = [[0, 1, 1, 2, 3, 3, 4, 0], [4, 2, 0, 0, 1, 3, 2, 2]][step]
    weight = torch.tensor(with_audio, dtype=dtype)
    return Batch(clip=torch.randn(GLOBAL_BATCH, 3, 4, 16, 16, generator=g, dtype=dtype),
                 target=torch.tensor(target),
                 audio=torch.randn(GLOBAL_BATCH, 512, generator=g, dtype=dtype) * weight[:, None],
                 audio_weight=weight, frame_index=1 + step)


def half(batch: Batch, rank: int) -> Batch:
    part = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)
    return Batch(clip=batch.clip[part], target=batch.target[part], audio=batch.audio[part],
                 audio_weight=batch.audio_weight[part], frame_index=batch.frame_index)


def parameters(student: nn.Module, teacher_list) -> dict[str, torch.Tensor]:
    named = {f"student.{n}": p for n, p in student.named_parameters()}
    named.update({f"{t.name}.{n}": p for t in teacher_list for n, p in t.head.named_parameters()})
    return {n: p.detach().clone() for n, p in named.items()}


class ClipSet(Dataset):
    """VAL_ITEMS dataset items (DESIGN.md) with fixed random uint8 clips."""

    def __len__(self) -> int:
        return VAL_ITEMS

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < VAL_ITEMS:
            raise IndexError(index)
        g = torch.Generator().manual_seed(index)
        return {"clip": torch.randint(0, 256, (3, 4, 16, 16), generator=g, dtype=torch.uint8),
                "target": torch.tensor(index % N_CLASSES), "audio": torch.zeros(512),
                "audio_weight": torch.tensor(0.0), "video_index": torch.tensor(index), "bad": []}


# ---------------------------------------------------------------- oracle

def reference_steps(config: str) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """The single-process oracle: per-half student forwards, concatenated outputs, every
    loss over the whole batch, one backward, the SGD steps; nothing gathered.
    Returns (per-step loss, correct count and smallest gap between a sample's two largest
    logits, the parameters after the last step)."""
    student, teacher_list = configure(config)
    optimizers = list(make_optimizers(student, heads(teacher_list), OPTIM).values())
    steps = []
    for step in range(CONFIGS[config]):
        batch = global_batch(step)
        halves = [half(batch, r) for r in range(WORLD)]
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        outputs = [student(h.clip) for h in halves]   # two calls: BatchNorm statistics per half
        logits = torch.cat([o[0] for o in outputs])
        features = torch.cat([o[1] for o in outputs])
        branches = []
        for teacher in teacher_list:
            parts = [teacher.features(h) for h in halves]
            weight = None if parts[0][1] is None else torch.cat([p[1] for p in parts])
            branches.append(TeacherInputs(teacher, torch.cat([p[0] for p in parts]), weight))
        loss, _ = ccl_objective(logits, features, batch.target, branches, LOSS_WEIGHT)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        top2 = logits.detach().topk(2, dim=1).values
        steps.append({"loss": loss.detach(), "correct": int((logits.argmax(1) == batch.target).sum()),
                      "margin": float((top2[:, 0] - top2[:, 1]).min())})
    return steps, parameters(student, teacher_list)


def validation_reference(student: nn.Module) -> dict[str, float]:
    """Every ClipSet clip once, one at a time, in eval mode. `margin`: the smallest gap
    between a clip's two largest logits."""
    student.eval()
    losses, correct, margins = [], 0, []
    with torch.no_grad():
        for item in ClipSet():
            logits, _ = student(normalize_clip(item["clip"][None], MEAN, STD))
            losses.append(F.cross_entropy(logits, item["target"][None]).item())
            correct += int(logits.argmax(1).item() == item["target"].item())
            top2 = logits[0].topk(2).values
            margins.append((top2[0] - top2[1]).item())
    return {"loss": sum(losses) / VAL_ITEMS, "acc": correct / VAL_ITEMS, "margin": min(margins)}


# ---------------------------------------------------------------- spawned ranks
# Each rank compares with the oracle itself and sends back numbers, not the 115 MB of
# float64 parameters per model.

def _train(rank: int, config: str) -> dict:
    """CONFIGS[config] DDP steps on this rank's halves, and how far the result lies from
    the oracle's: `excess` = max(|got − want| − (ATOL + RTOL·|want|)) per parameter (≤ 0
    passes). `digest` fingerprints each parameter exactly, to compare the ranks."""
    student, teacher_list = configure(config)
    initial = parameters(student, teacher_list)
    model = DistributedDataParallel(student)
    optimizers = list(make_optimizers(student, heads(teacher_list), OPTIM).values())
    steps = []
    for step in range(CONFIGS[config]):
        result = train_step(model, teacher_list, half(global_batch(step), rank), optimizers, LOSS_WEIGHT)
        steps.append({"loss": result.loss, "correct": int(result.correct), "count": result.count,
                      "finite": result.finite})
    got = parameters(student, teacher_list)
    reference, want = reference_steps(config)
    return {"steps": steps, "reference": reference, "names": sorted(got) == sorted(want),
            "excess": {n: float(((got[n] - w).abs() - (ATOL + RTOL * w.abs())).max()) for n, w in want.items()},
            "moved": {n: not torch.equal(initial[n], w) for n, w in want.items()},
            "digest": {n: hashlib.sha1(p.numpy().tobytes()).hexdigest() for n, p in got.items()}}


def _validate(rank: int) -> dict:
    """One float32 training step (BatchNorm statistics now differ per rank), then
    validate() over ClipSet split by the ordered sampler; rank 0 also evaluates its own
    model clip by clip."""
    torch.manual_seed(0)
    student = build_student("r21d", 18, N_CLASSES)
    model = DistributedDataParallel(student)
    optimizers = list(make_optimizers(student, nn.ModuleDict(), OPTIM).values())
    train_step(model, [], half(global_batch(0, torch.float32), rank), optimizers, LOSS_WEIGHT)
    loader = build_loader(ClipSet(), 2, shuffle=False, n_threads=0, distributed=True)
    metrics = validate(model, loader, torch.device("cpu"), MEAN, STD, SpeedMode(None, False))
    seen = [int(i) for sample in loader for i in sample["video_index"]]
    return {"metrics": metrics, "seen": seen, "reference": validation_reference(student) if rank == 0 else None}


def _gather_shared_gradient(rank: int) -> dict:
    """A graph where autograd hands the gathered tensor's gradient tensor to another branch
    too (the sum's backward), and that branch runs after the gather's backward (it was
    recorded earlier)."""
    x = torch.full((2, 3), float(rank + 1), dtype=torch.float64, requires_grad=True)
    z = torch.ones(2 * WORLD, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.arange(6.0 * WORLD, dtype=torch.float64).view(2 * WORLD, 3)
    doubled = z * 2
    ((gather_with_grad(x) + doubled) * weight).sum().backward()
    return {"x": x.grad, "z": z.grad}


def _broadcast(rank: int) -> dict:
    torch.manual_seed(rank)
    module = nn.BatchNorm1d(3)
    nn.init.normal_(module.weight)
    module.running_mean.normal_()
    broadcast_from_main(module)
    return {k: v.clone() for k, v in module.state_dict().items()}


def _worker(rank: int, store: str, out_dir: str) -> None:
    os.environ.update(loopback_env())
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        results = {config: _train(rank, config) for config in CONFIGS}
        results.update(validate=_validate(rank), gather=_gather_shared_gradient(rank), broadcast=_broadcast(rank))
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Results of both ranks of one spawned 2-process gloo group (fails on a hang)."""
    tmp = tmp_path_factory.mktemp("ranks")
    context = mp.start_processes(_worker, args=(str(tmp / "store"), str(tmp)), nprocs=WORLD,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + 240
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the spawned ranks hung")
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("config", list(CONFIGS))
def test_ddp_step_equals_single_process_on_the_global_batch(ranks, config):
    """DDP: 2 gloo processes end equal (rtol 1e-5) to one process that runs the student
    per half-batch, concatenates and computes every loss over the whole batch."""
    for rank, results in enumerate(ranks):
        got = results[config]
        assert got["names"]
        for step, want in zip(got["steps"], got["reference"], strict=True):
            assert step["finite"] and step["count"] == GLOBAL_BATCH
            # The ranks' logits and the oracle's may differ in the last bits: equal counts
            # are a check only without near ties.
            assert want["margin"] > 1e-9, want
            assert step["correct"] == want["correct"]
            torch.testing.assert_close(step["loss"], want["loss"], rtol=RTOL, atol=ATOL)
        off = {n: e for n, e in got["excess"].items() if e > 0}
        assert not off, f"rank {rank}: parameters off the oracle: {off}"
    if config == "ai":   # the heads took part: the oracle moved every parameter
        assert all(ranks[0][config]["moved"].values())


def test_ranks_hold_identical_weights_after_two_steps(ranks):
    """Student (DDP-averaged) and heads (not wrapped, identical global loss) stay
    bit-identical on both ranks."""
    digests = [results["ai"]["digest"] for results in ranks]
    assert any(n.startswith("audio.") for n in digests[0]) and any(n.startswith("image.") for n in digests[0])
    assert digests[0] == digests[1]


def test_validation_counts_every_clip_once_with_rank0_statistics(ranks):
    """5 clips over 2 ranks (3 + 2): validate() equals one process evaluating every clip
    once with rank 0's model (the one checkpointed)."""
    seen = [results["validate"]["seen"] for results in ranks]
    assert sorted(seen[0] + seen[1]) == list(range(VAL_ITEMS)) and len(seen[0]) != len(seen[1])
    want = ranks[0]["validate"]["reference"]
    # validate() runs clips in batches of 2, the reference one at a time: fp32 logits that
    # differ in the last bits. Equal accuracies are a check only without near ties.
    assert want["margin"] > 1e-3, want
    for results in ranks:
        assert results["validate"]["metrics"]["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert results["validate"]["metrics"]["acc"] == pytest.approx(want["acc"])


def test_gather_gradient_leaves_shared_gradients_alone(ranks):
    """d/dz of Σ (gather(x) + 2z)·W is 2W on every rank; x gets its rows of W summed over
    the ranks (DDP divides by the world size afterwards)."""
    weight = torch.arange(6.0 * WORLD, dtype=torch.float64).view(2 * WORLD, 3)
    for rank, results in enumerate(ranks):
        torch.testing.assert_close(results["gather"]["z"], 2 * weight, rtol=0, atol=0)
        torch.testing.assert_close(results["gather"]["x"], WORLD * weight[2 * rank:2 * rank + 2], rtol=0, atol=0)


def test_broadcast_from_main_copies_rank0_parameters_and_buffers(ranks):
    torch.manual_seed(0)
    module = nn.BatchNorm1d(3)
    nn.init.normal_(module.weight)
    module.running_mean.normal_()
    for results in ranks:
        for name, value in module.state_dict().items():
            assert torch.equal(results["broadcast"][name], value), name


# ---------------------------------------------------------------- torchrun end to end

WRAPPER = """
import os, sys
sys.path.insert(0, {repo!r})
import torch
import main
import training.engine

rank = os.environ["RANK"]
if os.environ.get("CCL_TEST_FAIL_RANK") == rank:
    train_step, calls = training.engine.train_step, []
    def failing_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:   # after the ranks have run collectives together
            raise RuntimeError("injected failure on rank " + rank)
        return train_step(*args, **kwargs)
    training.engine.train_step = failing_step
if os.environ.get("CCL_TEST_SAVE_WEIGHTS"):
    fit = training.engine.Engine.fit
    def fit_and_save(engine, *args, **kwargs):
        fit(engine, *args, **kwargs)
        state = engine.state
        weights = {{"student." + k: v for k, v in state.student.module.state_dict().items()}}
        weights.update({{t.name + "." + k: v for t in state.teachers for k, v in t.head.state_dict().items()}})
        torch.save(weights, os.path.join(os.environ["CCL_TEST_SAVE_WEIGHTS"], "rank" + rank + ".pt"))
    training.engine.Engine.fit = fit_and_save
sys.exit(main.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict:
    """The demo dataset at 2 training / 1 validation videos per class, with one validation
    video removed from the annotation so that 5 videos (15 clips) split unevenly, and half
    the training videos without audio."""
    pytest.importorskip("av", reason="the demo dataset's videos are encoded and converted with PyAV")
    from demo.data import build_demo_dataset
    root = tmp_path_factory.mktemp("tiny")
    paths = build_demo_dataset(root / "data", train_per_class=2, val_per_class=1)
    annotation = json.loads(paths["annotation_path"].read_text())
    val_ids = sorted(k for k, v in annotation["database"].items() if v["subset"] == "validation")
    del annotation["database"][val_ids.pop()]
    paths["annotation_path"] = root / "uneven.json"
    paths["annotation_path"].write_text(json.dumps(annotation))
    wrapper = root / "run_main.py"
    wrapper.write_text(textwrap.dedent(WRAPPER.format(repo=str(REPO))))
    # Half the training videos without audio, so that both ranks' shares hold some.
    training = sorted((k, v["annotations"]["label"]) for k, v in annotation["database"].items()
                      if v["subset"] == "training")
    for video_id, label in training[::2]:
        (paths["audio_path"] / label / f"{video_id}.npy").unlink(missing_ok=True)
    without_audio = [k for k, label in training if not (paths["audio_path"] / label / f"{k}.npy").is_file()]
    return {**paths, "val_ids": val_ids, "wrapper": wrapper, "train_without_audio": without_audio}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(data: dict, result_path: Path, extra: list[str], env: dict[str, str],
             timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """`torchrun --nproc_per_node 2 <wrapper> --distributed --no_cuda ...`; the whole process
    group is killed on timeout. Returns (completed process, seconds)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(data["wrapper"]),
               "--distributed", "--no_cuda", "--video_path", str(data["video_path"]),
               "--audio_path", str(data["audio_path"]), "--annotation_path", str(data["annotation_path"]),
               "--result_path", str(result_path), "--n_classes", "6", "--sample_size", "32",
               "--sample_duration", "8", "--image_size", "32", "--batch_size", "4", "--n_epochs", "1",
               "--n_threads", "0", "--no-tensorboard", *extra]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **loopback_env(), **env}
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"torchrun did not finish within {timeout} s (hang)")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr), time.monotonic() - start


def unique_keys(pairs: list[tuple]) -> dict:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys in val.json: {keys}"
    return dict(pairs)


def test_torchrun_ccl_ai_end_to_end(tiny_data, tmp_path):
    """`torchrun --nproc_per_node 2 main.py --distributed --no_cuda` for one CCL (AI) epoch
    with --inference --retrieval exits 0; val.json has every validation video once; both
    ranks end with the same student and heads."""
    weights = tmp_path / "weights"
    weights.mkdir()
    completed, _ = torchrun(tiny_data, tmp_path / "run",
                            ["--use_audio", "--use_image", "--allow_untrained_teacher", "--inference", "--retrieval"],
                            {"CCL_TEST_SAVE_WEIGHTS": str(weights)})
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "val.json").read_text(), object_pairs_hook=unique_keys)["results"]
    assert sorted(results) == tiny_data["val_ids"]
    assert all(len(top) == 5 for top in results.values())
    retrieval = json.loads((tmp_path / "run" / "retrieval.json").read_text())
    assert (retrieval["n_query"], retrieval["n_gallery"]) == (5, 12)
    # train.log counts over both ranks' shares of the epoch, not rank 0's alone.
    row, = read_log(tmp_path / "run" / "train.log")
    assert int(row["samples_without_audio"]) == len(tiny_data["train_without_audio"]) > 0
    rank0, rank1 = (torch.load(weights / f"rank{r}.pt") for r in range(WORLD))
    assert any(k.startswith("audio.") for k in rank0) and any(k.startswith("image.") for k in rank0)
    for name, value in rank0.items():
        assert torch.equal(value, rank1[name]), name


def test_torchrun_one_failing_rank_stops_every_rank(tiny_data, tmp_path):
    """DDP: one rank fails → all ranks stop with the failing rank's error (no hang)."""
    completed, seconds = torchrun(tiny_data, tmp_path / "run", ["--no_val"], {"CCL_TEST_FAIL_RANK": "1"})
    assert completed.returncode != 0
    assert "RuntimeError: injected failure on rank 1" in completed.stderr
    assert seconds < 90
