"""Image teachers other than the paper's ResNet-34 (`--image_teacher`), the frame they see,
and composition heads for teacher features of any D."""
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from models.composition import CompositionClassifier, composition_head
from models.image_teacher import (ImageTeacher, TorchvisionImageTeacher, build_image_teacher,
                                  calibrate_batchnorm, check_frame_size, default_weights_path,
                                  load_image_teacher, missing_weights_message, renormalize)
from models.torchvision_classifiers import build_without_classifier, check_name, imagenet_mean_std
from training.teachers import FrameNorm, make_frame_norm

SMALL = "mobilenet_v3_small"   # 2.5 M parameters, BatchNorm, classifier inside a Sequential


# ---------------------------------------------------------------- the classifier rule

# Where each family keeps its ImageNet classifier and what feeds it, from torchvision's sources.
FAMILIES = [("resnet18", "fc", 512), ("resnet50", "fc", 2048), ("efficientnet_b0", "classifier.1", 1280),
            ("mobilenet_v3_small", "classifier.3", 1024), ("convnext_tiny", "classifier.2", 768),
            ("densenet121", "classifier", 1024), ("vit_b_16", "heads.head", 768),
            ("swin_t", "head", 768), ("maxvit_t", "classifier.5", 512)]


@pytest.mark.parametrize("name,classifier,dim", FAMILIES)
def test_the_classifier_rule_finds_each_familys_head(name, classifier, dim):
    with torch.device("meta"):   # structure only: nothing is allocated or initialised
        model, path, feature_dim = build_without_classifier(name)
    assert (path, feature_dim) == (classifier, dim)
    assert isinstance(model.get_submodule(path), nn.Identity)
    assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in model.modules())


def test_regnet_built_on_the_cpu_drops_fc():
    # RegNet's builder computes its widths with tensors, so it cannot be built on "meta".
    model, path, dim = build_without_classifier("regnet_x_400mf")
    assert (path, dim) == ("fc", 400)
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 400)


def test_unsupported_and_unknown_models_are_one_line_errors():
    with pytest.raises(ValueError) as info:
        check_name("squeezenet1_0")   # its classifier is a convolution
    message = str(info.value)
    assert "\n" not in message and "resnet34" in message and "vit_b_16" in message
    assert "squeezenet" not in message.split(";")[1]
    with pytest.raises(ValueError, match="'r3d_18' is not supported"):
        check_name("r3d_18")   # a video model, not an image classifier


def test_resnet34_stays_the_papers_teacher():
    teacher = build_image_teacher("resnet34")
    assert type(teacher) is ImageTeacher and teacher.feature_dim == 512
    names = {k for k in teacher.state_dict()}
    assert names == {k for k in torchvision.models.resnet34().state_dict() if not k.startswith("fc.")}


# ---------------------------------------------------------------- frozen, eval, D

def test_any_teacher_is_frozen_stays_in_eval_and_reports_its_dim():
    torch.manual_seed(0)
    teacher = TorchvisionImageTeacher(SMALL)
    assert teacher.feature_dim == 1024
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    nn.Sequential(teacher).train()   # the student's .train() reaches it as a submodule, too
    assert not teacher.training and not any(m.training for m in teacher.modules())
    features = teacher(torch.randn(2, 3, 32, 32, requires_grad=True))
    assert features.shape == (2, 1024) and features.grad_fn is None


def test_fixed_size_models_refuse_other_frame_sizes():
    with torch.device("meta"):
        vit = TorchvisionImageTeacher("vit_b_16")
    check_frame_size(vit, "vit_b_16", 224)
    with pytest.raises(ValueError) as info:
        check_frame_size(vit, "vit_b_16", 112)
    message = str(info.value)
    assert "\n" not in message and "--image_size 224" in message and "112×112" in message
    assert "--sample_size at most 224" in message
    with torch.device("meta"):
        convnet = TorchvisionImageTeacher("efficientnet_b0")
    check_frame_size(convnet, "efficientnet_b0", 112)   # pooled: any size


# ---------------------------------------------------------------- weights

def calibrated(model: nn.Module, frames: torch.Tensor) -> nn.Module:
    """An untrained torchvision model with usable eval statistics (one batch, momentum 1)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
    with torch.no_grad():
        model(frames)
    return model.eval()


def test_loads_a_torchvision_state_dict_strictly_without_the_classifier(tmp_path, monkeypatch):
    torch.manual_seed(0)
    source = calibrated(torchvision.models.get_model(SMALL, weights=None), torch.randn(8, 3, 32, 32))
    path = tmp_path / "mobilenet.pth"
    torch.save(source.state_dict(), path)   # classifier.3.* included: dropped on loading

    teacher = load_image_teacher(path, name=SMALL)
    source.classifier[3] = nn.Identity()
    frames = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = source(frames)
    assert torch.allclose(teacher(frames), expected, atol=1e-5)

    # without a path: torchvision's cache file of the model's default weights
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    cached = tmp_path / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    assert default_weights_path(SMALL) == cached
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    assert torch.allclose(load_image_teacher(None, name=SMALL)(frames), expected, atol=1e-5)

    # strict: a file of another model, or one missing a key, is a one-line error naming it
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    state = torch.load(path)
    del state["features.0.0.weight"]
    torch.save(state, tmp_path / "partial.pth")
    for wrong in ("resnet18.pth", "partial.pth"):
        with pytest.raises(ValueError) as info:
            load_image_teacher(tmp_path / wrong, name=SMALL)
        assert f"{tmp_path / wrong} is not a torchvision {SMALL} state dict" in str(info.value)
        assert "\n" not in str(info.value)


def test_missing_weights_name_the_cache_file_and_the_published_url(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    expected = tmp_path / "checkpoints" / "vit_b_16-c867db91.pth"
    assert default_weights_path("vit_b_16") == expected
    message = missing_weights_message("vit_b_16", expected)
    assert str(expected) in message and "https://download.pytorch.org/models/vit_b_16-c867db91.pth" in message
    with pytest.raises(FileNotFoundError) as info:
        load_image_teacher(None, name=SMALL)
    message = str(info.value)
    assert "\n" not in message and "--image_teacher_weights" in message
    assert str(tmp_path / "checkpoints" / "mobilenet_v3_small-047dcff4.pth") in message
    assert "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth" in message


def test_untrained_fallback_works_with_and_without_batchnorm(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    with pytest.warns(UserWarning, match=f"UNTRAINED.*{SMALL}"):
        teacher = load_image_teacher(None, allow_untrained=True, name=SMALL)
    assert teacher(torch.randn(2, 3, 64, 64)).isfinite().all()
    no_batchnorm = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm([4, 6, 6]))
    before = {k: v.clone() for k, v in no_batchnorm.state_dict().items()}
    assert calibrate_batchnorm(no_batchnorm, torch.randn(4, 3, 8, 8)) is no_batchnorm
    assert all(torch.equal(v, before[k]) for k, v in no_batchnorm.state_dict().items())


# ---------------------------------------------------------------- the frame's normalization

def test_renormalize_matches_a_hand_computation():
    clip_mean, clip_std = [0.4345, 0.4051, 0.3775], [0.2768, 0.2713, 0.2737]   # Kinetics
    imagenet_mean, imagenet_std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    assert imagenet_mean_std("resnet34") == (imagenet_mean, imagenet_std)
    # One pixel, channels R, G, B, normalized in float64: a float32 frame alone would use up
    # most of the tolerance below.
    pixels = torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64)
    frame = ((pixels - torch.tensor(clip_mean, dtype=torch.float64))
             / torch.tensor(clip_std, dtype=torch.float64)).reshape(1, 3, 1, 1)
    out = renormalize(frame, clip_mean, clip_std, imagenet_mean, imagenet_std).flatten()
    # (0.5 − 0.485)/0.229, (0 − 0.456)/0.224, (1 − 0.406)/0.225
    expected = [0.06550218340611353, -2.0357142857142856, 2.64]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)

    assert make_frame_norm("clip", "vit_b_16", clip_mean, clip_std) is None
    norm = make_frame_norm("imagenet", "resnet34", clip_mean, clip_std)
    assert norm == FrameNorm(clip_mean, clip_std, imagenet_mean, imagenet_std)
    np.testing.assert_allclose(norm(frame).flatten().numpy(), expected, rtol=1e-6)


# ---------------------------------------------------------------- composition heads for any D

def test_composition_head_for_another_dim_matches_formula_and_projects_v():
    torch.manual_seed(0)
    head = composition_head(768, 5).double()
    assert {n: tuple(p.shape) for n, p in head.named_parameters()} == {
        "mlp.weight": (768, 1280), "mlp.bias": (768,), "fc.weight": (5, 768), "fc.bias": (5,),
        "projection.weight": (768, 512)}
    t, v = torch.randn(3, 768, dtype=torch.float64), torch.randn(3, 512, dtype=torch.float64)
    logits, composed = head(t, v)
    W, b = head.mlp.weight.detach().numpy(), head.mlp.bias.detach().numpy()
    Wf, bf = head.fc.weight.detach().numpy(), head.fc.bias.detach().numpy()
    P = head.projection.weight.detach().numpy()
    tn, vn = t.numpy(), v.numpy()
    joint = np.concatenate([tn / np.linalg.norm(tn, axis=1, keepdims=True),
                            vn / np.linalg.norm(vn, axis=1, keepdims=True)], axis=1)
    expected_m = tn + joint @ W.T + b
    np.testing.assert_allclose(composed.detach().numpy(), expected_m, rtol=1e-10)
    np.testing.assert_allclose(logits.detach().numpy(), expected_m @ Wf.T + bf, rtol=1e-10)
    np.testing.assert_allclose(head.project_student(v).detach().numpy(), vn @ P.T, rtol=1e-10)


def test_the_papers_head_has_no_projection():
    head = CompositionClassifier(1024, 5)
    assert head.projection is None and composition_head(512, 5).projection is None
    v = torch.randn(2, 512)
    assert head.project_student(v) is v
    assert [n for n, _ in head.named_parameters()] == ["mlp.weight", "mlp.bias", "fc.weight", "fc.bias"]


def test_the_papers_head_draws_the_originals_initial_weights_and_nothing_more():
    # The original's head: nn.Linear(1024, 512) then nn.Linear(512, C), from the global RNG.
    # Equal weights, and an equal next draw: a D = 512 head that built and dropped a
    # projection would shift every later initialization.
    torch.manual_seed(3)
    ours = composition_head(512, 7)
    ours_next = torch.rand(4)
    torch.manual_seed(3)
    mlp, fc = nn.Linear(1024, 512), nn.Linear(512, 7)
    originals_next = torch.rand(4)
    assert torch.equal(ours.mlp.weight, mlp.weight) and torch.equal(ours.mlp.bias, mlp.bias)
    assert torch.equal(ours.fc.weight, fc.weight) and torch.equal(ours.fc.bias, fc.bias)
    assert torch.equal(ours_next, originals_next)


# ---------------------------------------------------------------- through main.py

def with_audio_dim(data: dict, root, dim: int) -> dict:
    """A copy of the tiny dataset's paths whose audio features are random `dim`-d rows."""
    audio = root / "audio"
    rng = np.random.default_rng(0)
    for source in sorted(data["audio_path"].rglob("*.npy")):
        target = audio / source.relative_to(data["audio_path"])
        target.parent.mkdir(parents=True, exist_ok=True)
        rows = np.load(source).shape[:-1]
        np.save(target, rng.standard_normal((*rows, dim)).astype(np.float32))
    return {**data, "audio_path": audio}


def test_a_run_with_other_teachers_builds_each_head_for_its_dim(tiny_dataset, tmp_path, capsys):
    import main
    from models.checkpoint_file import read_checkpoint_file
    from tests.conftest import tiny_run_options

    data = with_audio_dim(tiny_dataset, tmp_path, 48)
    result = tmp_path / "result"
    options = tiny_run_options(data, result, "--sample_size", "16", "--sample_duration", "4", "--no_val",
                               "--n_epochs", "1", "--use_audio", "--use_image", "--allow_untrained_teacher",
                               "--image_teacher", SMALL, "--image_teacher_norm", "imagenet")
    assert main.main(options) == 0
    heads = read_checkpoint_file(result / "save_last.pth")["heads"]
    assert heads["audio"]["projection.weight"].shape == (48, 512)
    assert heads["audio"]["mlp.weight"].shape == (48, 48 + 512)
    assert heads["image"]["projection.weight"].shape == (1024, 512)
    assert heads["image"]["fc.weight"].shape == (6, 1024)

    capsys.readouterr()
    assert main.main(tiny_run_options(data, tmp_path / "vit", "--use_image", "--image_teacher", "vit_b_16",
                                      "--allow_untrained_teacher", "--n_epochs", "1")) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: --image_teacher vit_b_16 does not take 112×112 frames")
    assert "--image_size 224" in error


def test_main_refuses_unknown_teachers_and_missing_weights_up_front(tiny_dataset, tmp_path, capsys, monkeypatch):
    import main
    from tests.conftest import tiny_run_options

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    for extra, needles in ((["--image_teacher", "squeezenet1_0"], ["is not supported", "vit_b_16"]),
                           (["--image_teacher", SMALL], [str(default_weights_path(SMALL)),
                                                         "https://download.pytorch.org/models/"])):
        capsys.readouterr()
        assert main.main(tiny_run_options(tiny_dataset, tmp_path / "r", "--use_image", *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and all(n in err[0] for n in needles), err


def test_main_refuses_a_frame_size_the_teacher_cannot_take_before_anything_is_built(tiny_dataset, tmp_path, capsys):
    import main
    from tests.conftest import tiny_run_options

    result = tmp_path / "r"
    # ViT-B/16 takes 224×224 only: the 32 px clip's frame, and a 256 px one, are refused up front.
    for size in ("32", "256"):
        capsys.readouterr()
        assert main.main(tiny_run_options(tiny_dataset, result, "--use_image", "--image_teacher", "vit_b_16",
                                          "--image_size", size, "--allow_untrained_teacher")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --image_teacher vit_b_16 does not take"), err
        assert f"{size}×{size}" in err[0] and "--image_size 224" in err[0]
        assert not (result / "opts.json").exists()


def test_image_teacher_options_without_use_image_are_named_as_ignored():
    from opts import parse_opts, unused_options

    required = ["--video_path", "v", "--annotation_path", "a.json", "--result_path", "r"]
    [warning] = unused_options(parse_opts([*required, "--image_teacher", "vit_b_16", "--image_size", "224"]))
    assert "\n" not in warning and "--image_teacher vit_b_16" in warning and "--image_size 224" in warning
    assert "--use_image" in warning and "--image_teacher_norm" not in warning
    assert unused_options(parse_opts([*required, "--use_image", "--image_teacher", "vit_b_16"])) == ()
    assert unused_options(parse_opts([*required, "--use_audio", "--image_size", "112"])) == ()   # the default


def test_a_baseline_run_logs_the_image_teacher_options_it_ignores(tiny_dataset, tmp_path):
    import main
    from tests.conftest import tiny_run_options

    result = tmp_path / "r"
    assert main.main(tiny_run_options(tiny_dataset, result, "--n_epochs", "1", "--no_val",
                                      "--image_teacher", SMALL)) == 0
    warnings = [line for line in (result / "run.log").read_text().splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and f"--image_teacher {SMALL} ignored" in warnings[0]
