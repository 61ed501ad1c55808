"""What `--compile` relies on: the student, the image teacher and the CCL objective trace as
one graph each, and batches with other audio masks reuse it (static shapes, no host
syncs). Traced with a counting backend, so no code is generated here; the numerical check
of a compiled objective is in test_gradient_routing.py."""
import torch
from torch._dynamo.testing import CompileCounter

from models import build_student
from models.image_teacher import ImageTeacher
from training.objective import TeacherInputs, ccl_objective
from training.precision import SpeedMode, speed_mode
from training.teachers import build_teachers

N_CLASSES = 5


def compiled_with_counter(function):
    torch._dynamo.reset()
    counter = CompileCounter()
    return torch.compile(function, backend=counter, fullgraph=True), counter


def test_student_and_image_teacher_are_single_graphs():
    student, counter = compiled_with_counter(build_student("r21d", 18, N_CLASSES))
    for seed in range(2):
        student(torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(seed)))
    assert counter.frame_count == 1

    teacher, counter = compiled_with_counter(ImageTeacher().eval())
    with torch.no_grad():
        for seed in range(2):
            teacher(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)))
    assert counter.frame_count == 1


def test_objective_is_one_graph_whatever_the_audio_mask():
    torch.manual_seed(0)
    teachers = build_teachers(True, True, N_CLASSES, ImageTeacher(), 16, torch.device("cpu"))
    objective, counter = compiled_with_counter(ccl_objective)
    # Masks with 6, 1 and 0 samples with audio: boolean indexing would change shapes (and
    # recompile or break the graph); per-sample weights do not.
    for mask in ([1, 1, 0, 1, 1, 0, 1, 1], [0, 0, 0, 1, 0, 0, 0, 0], [0] * 8):
        logits = torch.randn(8, N_CLASSES, requires_grad=True)
        features = torch.randn(8, 512, requires_grad=True)
        target = torch.tensor([0, 1, 1, 2, 3, 3, 4, 0])
        branches = [TeacherInputs(teachers[0], torch.randn(8, 512), torch.tensor(mask, dtype=torch.float32)),
                    TeacherInputs(teachers[1], torch.randn(8, 512), None)]
        loss, _ = objective(logits, features, target, branches, 0.5)
        loss.backward()
        assert torch.isfinite(loss)
    assert counter.frame_count == 1


def test_speed_mode_per_device():
    assert speed_mode(torch.device("cuda"), exact=True) == SpeedMode(None, False)
    assert speed_mode(torch.device("cpu"), exact=True) == SpeedMode(None, False)
    assert speed_mode(torch.device("cuda"), exact=False) == SpeedMode(torch.bfloat16, True)
    # CPU: fp32 always (no autocast), channels_last_3d only where oneDNN runs it fast.
    assert speed_mode(torch.device("cpu"), exact=False) == SpeedMode(None, torch.backends.mkldnn.is_available())
