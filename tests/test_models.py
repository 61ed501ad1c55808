"""Students, image teacher and composition heads (SPEC §2)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from models.composition import CompositionClassifier
from models.factory import STUDENT_NAMES, build_student, strip_module_prefix
from models.image_teacher import (ImageTeacher, calibrate_batchnorm, default_weights_path,
                                  load_image_teacher, pick_frame)
from models.r21d import SpatioTemporalConv, intermediate_channels, r21d, r21d_std
from models.video_resnets import video_resnet_student

TV_BUILDERS = {"r3d_18": torchvision.models.video.r3d_18,
               "mc3_18": torchvision.models.video.mc3_18,
               "r2plus1d_18": torchvision.models.video.r2plus1d_18}


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def n_blocks(model: nn.Module) -> list[int]:
    return [1 + len(getattr(model, f"conv{i}").blocks) for i in range(2, 6)]


# ---------------------------------------------------------------- R(2+1)D

def naive_r21d_parameters(layer_sizes: list[int], n_classes: int) -> int:
    """SPEC §2 counted by hand: a k_t×k×k conv of N_in → N_out channels is a 1×k×k conv to
    M = ⌊k_t k² N_in N_out / (k² N_in + k_t N_out)⌋ channels, BatchNorm(M) (2M weights),
    and a k_t×1×1 conv to N_out; no conv has a bias. Stem 3 → 64 (3×7×7) + BatchNorm; stage
    blocks of two 3×3×3 convs, each + BatchNorm; the first block of stages 3-5 adds a 1×1×1
    shortcut conv + BatchNorm; then a 512 → n_classes linear layer."""
    def factored(n_in, n_out, kt, k):
        m = kt * k * k * n_in * n_out // (k * k * n_in + kt * n_out)
        return m * n_in * k * k + 2 * m + n_out * m * kt

    total = factored(3, 64, 3, 7) + 2 * 64
    for (n_in, n_out), blocks in zip([(64, 64), (64, 128), (128, 256), (256, 512)], layer_sizes, strict=True):
        for b in range(blocks):
            block_in = n_in if b == 0 else n_out
            total += factored(block_in, n_out, 3, 3) + factored(n_out, n_out, 3, 3) + 4 * n_out
            if block_in != n_out:
                total += factored(block_in, n_out, 1, 1) + 2 * n_out
    return total + 512 * n_classes + n_classes


def test_r21d_depth18_is_the_original_one_block_network():
    model = r21d(18, 51)
    assert n_parameters(model) == 14_391_466 == naive_r21d_parameters([1, 1, 1, 1], 51)   # SPEC §2
    assert n_blocks(model) == [1, 1, 1, 1]


def test_layouts_of_other_depths_and_standard_variant():
    for model, layout in ((r21d(34, 5), [3, 4, 6, 3]), (r21d_std(18, 5), [2, 2, 2, 2]),
                          (r21d_std(34, 5), [3, 4, 6, 3])):
        assert n_blocks(model) == layout
        assert n_parameters(model) == naive_r21d_parameters(layout, 5)
    with pytest.raises(ValueError, match="model_depth"):
        r21d(50, 5)


@pytest.mark.parametrize("kernel, n_in, n_out, expected", [
    ((3, 3, 3), 64, 64, 144),      # 27·64·64 / (9·64 + 3·64) = 110592 / 768
    ((3, 7, 7), 3, 64, 83),        # 28224 / 339 = 83.26
    ((1, 1, 1), 64, 128, 42),      # 8192 / 192 = 42.67
    ((3, 3, 3), 128, 256, 460),    # 884736 / 1920 = 460.8
])
def test_intermediate_channels_hand_computed(kernel, n_in, n_out, expected):
    assert intermediate_channels(kernel, n_in, n_out) == expected
    conv = SpatioTemporalConv(n_in, n_out, kernel)
    assert conv.spatial_conv.out_channels == expected
    assert conv.bn.num_features == expected


def test_r21d_modules_use_the_hand_computed_widths():
    model = r21d(18, 51)
    assert model.conv1.spatial_conv.out_channels == 83
    assert model.conv3.block1.downsampleconv.spatial_conv.out_channels == 42
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv3d))


def test_r21d_state_dict_names_are_the_originals():
    keys = set(r21d(34, 51).state_dict())
    expected = {
        "conv1.spatial_conv.weight", "conv1.bn.weight", "conv1.bn.running_mean",
        "conv1.temporal_conv.weight", "bn1.weight", "bn1.bias", "bn1.running_var",
        "conv2.block1.conv1.spatial_conv.weight", "conv2.block1.conv1.bn.weight",
        "conv2.block1.conv1.temporal_conv.weight", "conv2.block1.bn1.weight",
        "conv2.block1.conv2.spatial_conv.weight", "conv2.block1.conv2.temporal_conv.weight",
        "conv2.block1.bn2.running_mean", "conv3.block1.downsampleconv.spatial_conv.weight",
        "conv3.block1.downsampleconv.temporal_conv.weight", "conv3.block1.downsamplebn.weight",
        "conv5.block1.downsamplebn.running_var", "conv2.blocks.0.conv1.spatial_conv.weight",
        "conv2.blocks.1.bn2.bias", "conv5.blocks.1.conv2.temporal_conv.weight",
        "linear.weight", "linear.bias",
    }
    assert expected <= keys
    assert not any(k.startswith("conv2.block1.downsample") for k in keys)
    assert not any(k.endswith("conv.bias") for k in keys)


def test_spatiotemporal_conv_matches_explicit_factorisation():
    torch.manual_seed(0)
    conv = SpatioTemporalConv(4, 6, (3, 5, 5), stride=(2, 2, 2), padding=(1, 2, 2)).eval()
    nn.init.uniform_(conv.bn.running_mean, -1, 1)
    nn.init.uniform_(conv.bn.running_var, 0.5, 2)
    x = torch.randn(2, 4, 6, 9, 9)
    bn = conv.bn
    h = F.conv3d(x, conv.spatial_conv.weight, stride=(1, 2, 2), padding=(0, 2, 2))
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).view(1, -1, 1, 1, 1)
    h = (h - bn.running_mean.view(1, -1, 1, 1, 1)) * scale + bn.bias.view(1, -1, 1, 1, 1)
    expected = F.conv3d(h.clamp(min=0), conv.temporal_conv.weight, stride=(2, 1, 1),
                        padding=(1, 0, 0))
    assert expected.shape == (2, 6, 3, 5, 5)
    assert torch.allclose(conv(x), expected, atol=1e-5)


def test_r21d_forward_features_are_pooled_conv5_and_logits_the_linear_of_them():
    torch.manual_seed(0)
    model = r21d(18, 7).eval()
    captured = {}
    model.conv5.register_forward_hook(lambda m, i, o: captured.update(conv5=o))
    logits, features = model(torch.randn(2, 3, 8, 32, 32))
    assert captured["conv5"].shape == (2, 512, 1, 2, 2)  # T/8, H/16
    assert logits.shape == (2, 7) and features.shape == (2, 512)
    assert torch.allclose(features, captured["conv5"].mean(dim=(2, 3, 4)), atol=1e-6)
    assert torch.allclose(logits, features @ model.linear.weight.T + model.linear.bias, atol=1e-5)


def test_r21d_channels_last_3d_gives_the_same_outputs():
    torch.manual_seed(0)
    model = r21d(18, 5).eval()
    x = torch.randn(2, 3, 8, 32, 32)
    logits, features = model(x)
    model_cl = model.to(memory_format=torch.channels_last_3d)
    logits_cl, features_cl = model_cl(x.to(memory_format=torch.channels_last_3d))
    # Relative to each output's scale: an untrained student's outputs are small (features
    # about 2e-3 here), so a fixed 1e-4 would let a layout error of several percent pass;
    # other kernels for the other layout differ by about 1e-6 of the scale.
    for got, want in ((logits_cl, logits), (features_cl, features)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


# ---------------------------------------------------------------- checkpoints / factory

def original_checkpoint(model: nn.Module) -> dict:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [10, 20])
    return {"epoch": 3, "arch": "r21d-18", "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}


def test_original_format_checkpoint_loads_strictly(tmp_path):
    torch.manual_seed(0)
    source = r21d(18, 51).eval()
    path = tmp_path / "save_3.pth"
    torch.save(original_checkpoint(source), path)
    torch.manual_seed(1)
    target = r21d(18, 51).eval()
    target.load_state_dict(torch.load(path, weights_only=True)["state_dict"], strict=True)
    x = torch.randn(1, 3, 4, 32, 32)
    assert torch.equal(target(x)[0], source(x)[0])


def test_strip_module_prefix():
    state = {"module.conv1.bn.weight": torch.ones(1), "module.linear.bias": torch.zeros(2)}
    assert strip_module_prefix(state) == {"conv1.bn.weight": state["module.conv1.bn.weight"],
                                          "linear.bias": state["module.linear.bias"]}
    assert strip_module_prefix({"linear.bias": state["module.linear.bias"]}).keys() == {"linear.bias"}


def test_build_student_pretrain_path_with_module_prefix_and_new_head(tmp_path, caplog):
    torch.manual_seed(0)
    source = r21d(18, 51)
    checkpoint = original_checkpoint(source)
    checkpoint["state_dict"] = {f"module.{k}": v for k, v in checkpoint["state_dict"].items()}
    path = tmp_path / "save_3.pth"
    torch.save(checkpoint, path)

    caplog.set_level("INFO", logger="ccl")
    same = build_student("r21d", 18, 51, pretrain_path=str(path))
    for k, v in source.state_dict().items():
        assert torch.equal(same.state_dict()[k], v), k
    assert caplog.messages == [f"loaded --pretrain_path {path}: every weight, the classifier's included"]

    caplog.clear()
    new_head = build_student("r21d", 18, 10, pretrain_path=str(path))
    assert new_head.linear.weight.shape == (10, 512)
    assert torch.equal(new_head.conv5.block1.bn2.weight, source.conv5.block1.bn2.weight)
    assert caplog.messages == [f"loaded --pretrain_path {path}: every weight but the classifier (linear), which "
                               f"keeps its initialisation for the new class count"]

    with pytest.raises(ValueError, match="does not match"):
        build_student("r21d_std", 18, 51, pretrain_path=str(path))


def test_build_student_errors():
    with pytest.raises(ValueError) as info:
        build_student("resnet3d", 18, 5)
    for name in STUDENT_NAMES:
        assert name in str(info.value)
    with pytest.raises(FileNotFoundError, match="--pretrain_path .*nowhere.pth"):
        build_student("r21d", 18, 5, pretrain_path="/nowhere.pth")
    with pytest.raises(ValueError, match="model_depth 18"):
        build_student("r3d_18", 34, 5)


# ---------------------------------------------------------------- torchvision students

@pytest.mark.parametrize("name", sorted(TV_BUILDERS))
def test_torchvision_student_equals_torchvision_model(name):
    torch.manual_seed(0)
    reference = TV_BUILDERS[name](weights=None, num_classes=6).eval()
    student = build_student(name, 18, 6).eval()
    student.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 4, 32, 32)
    logits, features = student(x)
    assert logits.shape == (2, 6) and features.shape == (2, 512)
    assert torch.allclose(logits, reference(x), atol=1e-5)
    assert torch.allclose(logits, student.fc(features), atol=1e-6)


def test_torchvision_student_loads_kinetics_state_dict(tmp_path):
    torch.manual_seed(0)
    kinetics = torchvision.models.video.r3d_18(weights=None)  # 400 classes, random weights
    path = tmp_path / "r3d_18_kinetics.pth"
    torch.save(kinetics.state_dict(), path)

    student = build_student("r3d_18", 18, 51, pretrain_path=str(path))
    assert student.fc.weight.shape == (51, 512)
    assert torch.equal(student.layer4[1].conv2[0].weight, kinetics.layer4[1].conv2[0].weight)

    full = build_student("r3d_18", 18, 400, pretrain_path=str(path))
    assert torch.equal(full.fc.weight, kinetics.fc.weight)

    with pytest.raises(ValueError, match="does not match"):
        build_student("mc3_18", 18, 51, pretrain_path=str(path))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_student("r3d_18", 18, 5, pretrain_path=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="choices"):
        video_resnet_student("r3d_34", 18, 5)


# ---------------------------------------------------------------- composition head

def test_composition_classifier_matches_formula():
    torch.manual_seed(0)
    head = CompositionClassifier(1024, 5).double()
    t, v = torch.randn(3, 512, dtype=torch.float64), torch.randn(3, 512, dtype=torch.float64)
    logits, composed = head(t, v)

    tn, vn = t.numpy(), v.numpy()
    W, b = head.mlp.weight.detach().numpy(), head.mlp.bias.detach().numpy()
    Wf, bf = head.fc.weight.detach().numpy(), head.fc.bias.detach().numpy()
    expected_m = np.empty((3, 512))
    for i in range(3):
        joint = np.concatenate([tn[i] / np.sqrt((tn[i] ** 2).sum()),
                                vn[i] / np.sqrt((vn[i] ** 2).sum())])
        expected_m[i] = tn[i] + W @ joint + b
    expected_z = expected_m @ Wf.T + bf
    np.testing.assert_allclose(composed.detach().numpy(), expected_m, rtol=1e-10)
    np.testing.assert_allclose(logits.detach().numpy(), expected_z, rtol=1e-10)
    assert {n for n, _ in head.named_parameters()} == {"mlp.weight", "mlp.bias", "fc.weight", "fc.bias"}


def test_composition_classifier_keeps_input_dtype():
    head = CompositionClassifier(1024, 4).to(torch.bfloat16)
    logits, composed = head(torch.randn(2, 512, dtype=torch.bfloat16),
                            torch.randn(2, 512, dtype=torch.bfloat16))
    assert logits.dtype == composed.dtype == torch.bfloat16


# ---------------------------------------------------------------- image teacher

@pytest.fixture(scope="module")
def teacher() -> ImageTeacher:
    torch.manual_seed(0)
    return ImageTeacher()


def test_image_teacher_is_frozen_and_stays_in_eval(teacher):
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    frames = torch.randn(2, 3, 32, 32, requires_grad=True)
    features = teacher(frames)
    assert features.shape == (2, 512)
    assert features.grad_fn is None and not features.requires_grad


def test_missing_teacher_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    expected = tmp_path / "hub" / "checkpoints" / "resnet34-b627a593.pth"
    assert default_weights_path() == expected
    with pytest.raises(FileNotFoundError) as info:
        load_image_teacher(None)
    message = str(info.value)
    assert str(expected) in message and "--image_teacher_weights" in message
    assert "\n" not in message
    with pytest.raises(FileNotFoundError, match="--image_teacher_weights"):
        load_image_teacher(str(tmp_path / "absent.pth"))


def calibrated_in_test(model: nn.Module, frames: torch.Tensor) -> None:
    """Give an untrained torchvision ResNet usable eval statistics (one batch, momentum 1)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        model(frames)
    model.eval()


def test_teacher_loads_torchvision_state_dict_and_drops_fc(tmp_path, monkeypatch):
    torch.manual_seed(0)
    source = torchvision.models.resnet34()
    calibrated_in_test(source, torch.randn(8, 3, 32, 32))
    path = tmp_path / "resnet34.pth"
    torch.save(source.state_dict(), path)  # fc.* included: must be tolerated

    teacher = load_image_teacher(str(path))
    source.fc = nn.Identity()
    frames = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = source(frames)
    assert torch.allclose(teacher(frames), expected, atol=1e-5)

    # the cache location is used when no path is given
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet34-b627a593.pth").write_bytes(path.read_bytes())
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    assert torch.allclose(load_image_teacher(None)(frames), expected, atol=1e-5)

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(ValueError, match="not a torchvision resnet34"):
        load_image_teacher(str(tmp_path / "resnet18.pth"))


def test_calibrate_batchnorm_sets_cumulative_batch_statistics():
    torch.manual_seed(0)
    teacher = ImageTeacher()
    frames = torch.randn(12, 3, 64, 64)
    raw = teacher(frames)
    calibrate_batchnorm(teacher, frames, batch_size=6)
    assert not teacher.training

    # the stem's BN sees conv1(frames): its running mean is the mean of the two chunk means
    with torch.no_grad():
        stem = teacher.conv1(frames)
    chunk_means = [c.mean(dim=(0, 2, 3)) for c in stem.split(6)]
    chunk_vars = [c.transpose(0, 1).flatten(1).var(dim=1, unbiased=True) for c in stem.split(6)]
    assert torch.allclose(teacher.bn1.running_mean, (chunk_means[0] + chunk_means[1]) / 2, atol=1e-5)
    assert torch.allclose(teacher.bn1.running_var, (chunk_vars[0] + chunk_vars[1]) / 2, rtol=1e-4)
    assert teacher.bn1.momentum == 0.1

    features = teacher(frames)
    assert features.isfinite().all()
    assert features.abs().max() < 10 < raw.abs().max()


def test_untrained_fallback_warns_and_is_calibrated(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    with pytest.warns(UserWarning, match="UNTRAINED"):
        teacher = load_image_teacher(None, allow_untrained=True)
    features = teacher(torch.randn(2, 3, 64, 64))
    assert features.isfinite().all() and features.abs().max() < 10


def test_pick_frame_resizes_height_and_width_not_time():
    # value = 100·t + h + 2·w: bilinear resizing keeps an affine function, so every output
    # pixel is known from the source coordinate (j + 0.5)·in/out - 0.5, clamped to the edge
    t, h, w = torch.meshgrid(torch.arange(4.), torch.arange(8.), torch.arange(8.), indexing="ij")
    clip = (100 * t + h + 2 * w).expand(2, 3, 4, 8, 8)

    def source(j: int) -> float:
        return min(max((j + 0.5) * 8 / 16 - 0.5, 0.0), 7.0)

    expected = torch.tensor([[100 * 2 + source(i) + 2 * source(j) for j in range(16)]
                             for i in range(16)])
    frame = pick_frame(clip, 2, 16)
    assert frame.shape == (2, 3, 16, 16)
    assert torch.allclose(frame, expected.expand(2, 3, 16, 16), atol=1e-5)

    assert torch.equal(pick_frame(clip, 1, 8), clip[:, :, 1])


def test_pick_frame_on_a_112_clip_for_a_224_teacher():
    clip = torch.randn(1, 3, 4, 112, 112)
    frame = pick_frame(clip, 3, 224)
    assert frame.shape == (1, 3, 224, 224)
    # ×2 bilinear (align_corners=False): an interior output pixel 2i+1 is ¾·x[i] + ¼·x[i+1]
    x = clip[0, :, 3]
    i = 40
    row = 0.75 * x[:, :, i] + 0.25 * x[:, :, i + 1]         # along W, for every source row
    col = 0.75 * row[:, i] + 0.25 * row[:, i + 1]            # then along H
    assert torch.allclose(frame[0, :, 2 * i + 1, 2 * i + 1], col, atol=1e-5)
