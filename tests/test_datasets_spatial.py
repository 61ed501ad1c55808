"""Clip-level spatial transforms and normalization (SPEC §4) against PIL / torchvision / loops."""
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop

from datasets import KINETICS_MEAN, KINETICS_STD, normalization_stats, normalize_clip
from training.batch import model_input
from datasets.spatial import ClipCenterCrop, ClipRandomResizedCrop, random_resized_crop_params

SCALE, RATIO = (0.25, 1.0), (3 / 4, 4 / 3)


def smooth_image(seed: int, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 with texture at a few-pixel scale (low-res noise, bicubic upsampled)."""
    small = np.random.default_rng(seed).integers(0, 256, (height // 6, width // 6, 3), np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))


def to_frames(*images: np.ndarray) -> torch.Tensor:
    """(H, W, 3) arrays → (N, 3, H, W) uint8, channels_last like decoded frames."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


def test_crop_params_match_torchvision_draw_for_draw():
    # (100, 400) with scale near 1 exercises the fallback central crop.
    for height, width, scale in ((240, 320, SCALE), (320, 240, SCALE), (100, 400, (0.9, 1.0))):
        image = torch.empty(3, height, width, dtype=torch.uint8)
        for seed in range(100):
            torch.manual_seed(seed)
            expected = RandomResizedCrop.get_params(image, list(scale), list(RATIO))
            torch.manual_seed(seed)
            assert random_resized_crop_params(height, width, scale, RATIO) == expected


def test_train_crop_is_one_crop_per_clip_and_matches_pil():
    a, b = smooth_image(1, 60, 80), smooth_image(2, 60, 80)
    frames = to_frames(a, b, a, a, b)
    transform = ClipRandomResizedCrop(32, SCALE, RATIO, hflip=True)
    flips = set()
    for seed in range(20):
        torch.manual_seed(seed)
        out = transform(frames)
        assert out.shape == (5, 3, 32, 32) and out.dtype == torch.uint8
        assert torch.equal(out[0], out[2]) and torch.equal(out[0], out[3])
        assert torch.equal(out[1], out[4])
        # The original chain on the same random draws: PIL crop + bilinear resize + flip.
        torch.manual_seed(seed)
        top, left, h, w = RandomResizedCrop.get_params(Image.fromarray(a), list(SCALE),
                                                       list(RATIO))
        flip = torch.rand(1).item() < 0.5
        flips.add(flip)
        for source, got in ((a, out[0]), (b, out[1])):
            pil = Image.fromarray(source).crop((left, top, left + w, top + h))
            pil = pil.resize((32, 32), Image.BILINEAR)
            if flip:
                pil = pil.transpose(Image.FLIP_LEFT_RIGHT)
            expected = torch.from_numpy(np.array(pil)).permute(2, 0, 1).int()
            assert (got.int() - expected).abs().max() <= 2
    assert flips == {True, False}


def oracle_mean_scale(height, width, n=40000, seed=0):
    """Mean area share of torchvision's RandomResizedCrop algorithm, by NumPy Monte Carlo."""
    rng = np.random.default_rng(seed)
    shares = []
    for _ in range(n):
        for _ in range(10):
            area = height * width * rng.uniform(*SCALE)
            aspect = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
            w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < w <= width and 0 < h <= height:
                break
        else:
            w, h = width, height  # 4:3 frames fall back to the whole frame
        shares.append(w * h / (height * width))
    return float(np.mean(shares))


@pytest.fixture
def one_thread():
    # Many small resizes: intra-op threads only add scheduling waits on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_crop_scale_and_flip_statistics_read_off_the_pixels(one_thread):
    # R grows with x, G with y: the output's edge values say where the crop was and whether
    # it was flipped, independently of how the transform computed it.
    height, width, size = 240, 320, 112
    ramp = np.zeros((height, width, 3), np.uint8)
    ramp[..., 0] = np.round(np.arange(width) * 255 / (width - 1))[None, :]
    ramp[..., 1] = np.round(np.arange(height) * 255 / (height - 1))[:, None]
    frames = to_frames(ramp)
    transform = ClipRandomResizedCrop(size, SCALE, RATIO)
    torch.manual_seed(0)
    shares, flips, ratios = [], [], []
    for _ in range(1500):
        out = transform(frames)[0].float()
        dx = (out[0, :, -1].mean() - out[0, :, 0].mean()).item()
        dy = (out[1, -1, :].mean() - out[1, 0, :].mean()).item()
        # Output pixel centres span (1 - 1/size) of the crop.
        w = abs(dx) * (width - 1) / 255 / (1 - 1 / size)
        h = dy * (height - 1) / 255 / (1 - 1 / size)
        shares.append(w * h / (width * height))
        flips.append(dx < 0)
        ratios.append(w / h)
    assert abs(np.mean(flips) - 0.5) < 0.05
    assert abs(np.mean(shares) - oracle_mean_scale(height, width)) < 0.02
    assert min(shares) > 0.25 - 0.03 and max(shares) < 1.03
    assert min(ratios) > 0.75 - 0.05 and max(ratios) < 4 / 3 + 0.05


@pytest.mark.parametrize("height, width", [(240, 320), (320, 240), (112, 150)])
def test_center_crop_matches_pil_resize_and_crop(height, width):
    image = smooth_image(3, height, width)
    out = ClipCenterCrop(112)(to_frames(image, image))
    assert out.shape == (2, 3, 112, 112) and torch.equal(out[0], out[1])
    # torchvision's Resize(112) on PIL: short side 112, long side int(112 * long / short);
    # CenterCrop: offset int(round((size - 112) / 2)).
    if width >= height:
        new_w, new_h = int(112 * width / height), 112
    else:
        new_w, new_h = 112, int(112 * height / width)
    resized = Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR)
    left, top = int(round((new_w - 112) / 2.0)), int(round((new_h - 112) / 2.0))
    expected = np.asarray(resized)[top:top + 112, left:left + 112]
    got = out[0].permute(1, 2, 0).numpy()
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 2


def test_normalize_clip_against_a_loop():
    torch.manual_seed(0)
    clip = torch.randint(0, 256, (2, 3, 2, 3, 4), dtype=torch.uint8)
    out = normalize_clip(clip)
    assert out.dtype == torch.float32 and out.shape == clip.shape
    for index in np.ndindex(*clip.shape):
        c = index[1]
        expected = (clip[index].item() / 255 - KINETICS_MEAN[c]) / KINETICS_STD[c]
        assert abs(out[index].item() - expected) < 1e-5
    mean, std = normalization_stats(no_mean_norm=True, no_std_norm=True)
    assert torch.allclose(normalize_clip(clip, mean, std), clip.float() / 255)
    mean, std = normalization_stats(no_mean_norm=True)
    assert mean == (0.0, 0.0, 0.0) and std == KINETICS_STD
    assert normalize_clip(clip, dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        normalize_clip(clip[0])


@pytest.mark.parametrize("channels_last", [False, True])
def test_model_input_layout_follows_the_student_not_the_batch(channels_last):
    torch.manual_seed(0)
    contiguous = torch.randint(0, 256, (2, 3, 4, 5, 6), dtype=torch.uint8)
    for batch in (contiguous, contiguous.contiguous(memory_format=torch.channels_last_3d)):
        out = model_input(batch, KINETICS_MEAN, KINETICS_STD, channels_last)
        layout = torch.channels_last_3d if channels_last else torch.contiguous_format
        assert out.is_contiguous(memory_format=layout)
        assert torch.equal(out, normalize_clip(contiguous))
