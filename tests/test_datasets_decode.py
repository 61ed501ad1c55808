"""Cropped and reduced-scale decoding (datasets.hdf5_clip.decode_frames) with the clip
transforms' plans, against full-size decoding, torchvision's own transforms and geometry
computed here."""
import io
import json

import h5py
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode, RandomResizedCrop

from datasets import VideoDataset
from datasets.hdf5_clip import (BadSampleError, EncodedClip, decode_frames, jpeg_size,
                                read_encoded)
from datasets.spatial import ClipCenterCrop, ClipRandomResizedCrop
from datasets.synthetic import realistic_jpeg, write_video_hdf5

SCALE, RATIO = (0.25, 1.0), (3 / 4, 4 / 3)


def jpeg(image: np.ndarray, quality: int = 90, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, **options)
    return buffer.getvalue()


def encoded_clip(jpegs: list[bytes]) -> EncodedClip:
    """An in-memory clip of frames 1..U (what read_encoded returns for a file)."""
    data = [np.frombuffer(j, np.uint8).copy() for j in jpegs]
    return EncodedClip("mem.hdf5", np.arange(1, len(data) + 1), data,
                       torch.arange(len(data)), jpeg_size(data[0]))


def full_decode(data: bytes) -> torch.Tensor:
    """(3, H, W) uint8 straight from torchvision, the oracle for the full-size path."""
    return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                       mode=ImageReadMode.RGB)


def blob_image(height: int, width: int, y0: float, x0: float, sigma: float) -> np.ndarray:
    """(H, W, 3) uint8: a Gaussian blob centred on continuous position (y0, x0), pixel
    (i, j) covering [i, i+1) × [j, j+1)."""
    y, x = np.mgrid[0:height, 0:width] + 0.5
    blob = 20 + 220 * np.exp(-((y - y0) ** 2 + (x - x0) ** 2) / (2 * sigma ** 2))
    return np.repeat(np.round(blob).astype(np.uint8)[..., None], 3, axis=2)


def centroid(image: torch.Tensor) -> tuple[float, float]:
    """Continuous (y, x) centre of mass of (3, h, w) above its background level."""
    weight = (image[0].double() - 20).clamp(min=0)
    y, x = torch.meshgrid(torch.arange(image.shape[1]) + 0.5, torch.arange(image.shape[2]) + 0.5,
                          indexing="ij")
    return ((weight * y).sum() / weight.sum()).item(), ((weight * x).sum() / weight.sum()).item()


@pytest.mark.parametrize("size, options", [
    ((320, 240), {}), ((33, 17), {"progressive": True}),
    ((641, 479), {"exif": b"Exif\0\0" + bytes(200)}),
    ((50, 70), {"subsampling": 0, "qtables": "web_high"})])
def test_jpeg_size_matches_pillow(size, options):
    data = jpeg(np.zeros((size[1], size[0], 3), np.uint8), **options)
    assert jpeg_size(data) == (size[1], size[0]) == Image.open(io.BytesIO(data)).size[::-1]
    grey = io.BytesIO()
    Image.new("L", size).save(grey, format="JPEG")
    assert jpeg_size(np.frombuffer(grey.getvalue(), np.uint8)) == (size[1], size[0])


@pytest.mark.parametrize("data", [b"", b"\xff\xd8", b"\xff\xd8 this is not a jpeg", b"GIF89a..."])
def test_jpeg_size_rejects_what_is_not_a_jpeg_header(data):
    with pytest.raises(ValueError):
        jpeg_size(data)


def test_full_size_box_is_the_slice_of_the_decoded_frames():
    rng = np.random.default_rng(0)
    jpegs = [jpeg(rng.integers(0, 256, (30, 40, 3), np.uint8)) for _ in range(3)]
    frames = decode_frames(encoded_clip(jpegs), box=(5, 7, 20, 31))
    assert frames.shape == (3, 3, 20, 31)
    assert frames.is_contiguous(memory_format=torch.channels_last)
    for got, data in zip(frames, jpegs):
        assert torch.equal(got, full_decode(data)[:, 5:25, 7:38])
    assert torch.equal(decode_frames(encoded_clip(jpegs))[1], full_decode(jpegs[1]))


def test_train_path_equals_the_full_frame_transform():
    # plan → decode only the box → finish must give what torchvision's resized_crop + flip
    # give on the whole decoded frames, with the same draws from the torch RNG. Bit for bit
    # where torchvision's uint8 resize runs its AVX2 kernel, whatever the memory layout; its
    # generic kernel (CPUs without AVX2) rounds our channels_last box and the strided view
    # of the whole frame one grey level apart on some pixels. A crop one pixel off differs
    # by up to 12 levels on these frames.
    rng = np.random.default_rng(1)
    jpegs = [realistic_jpeg(rng, phase=k, width=96, height=72) for k in range(3)]
    clip = encoded_clip(jpegs)
    transform = ClipRandomResizedCrop(32, SCALE, RATIO)
    whole = torch.stack([full_decode(j) for j in jpegs])
    flips = set()
    for seed in range(12):
        torch.manual_seed(seed)
        plan = transform.plan(*clip.frame_size)
        assert plan.scale == 1
        got = transform.finish(decode_frames(clip, plan.box, plan.scale), plan)
        torch.manual_seed(seed)
        top, left, h, w = RandomResizedCrop.get_params(whole, list(SCALE), list(RATIO))
        flip = torch.rand(1).item() < 0.5
        flips.add(flip)
        expected = TF.resized_crop(whole, top, left, h, w, [32, 32],
                                   interpolation=InterpolationMode.BILINEAR, antialias=True)
        expected = expected.flip(-1) if flip else expected
        assert (got.int() - expected.int()).abs().max() <= 1
    assert flips == {True, False}


@pytest.mark.parametrize("height, width, scale", [
    (240, 320, 2), (320, 240, 2), (224, 300, 2), (480, 640, 4), (960, 1280, 8),
    (200, 300, 1), (241, 320, 1), (240, 321, 1), (112, 150, 1)])
def test_center_crop_decode_scale_and_fallback(height, width, scale):
    # The largest s in {1, 2, 4, 8} with short side / s ≥ 112 and s dividing both sides.
    plan = ClipCenterCrop(112, reduced_decode=True).plan(height, width)
    assert plan.scale == scale and plan.box == (0, 0, height, width) and not plan.flip
    short, long = min(height, width), max(height, width)
    resized = (112, int(112 * long / short))
    assert plan.resize == (resized if height <= width else resized[::-1])


@pytest.mark.parametrize("height, width", [(240, 320), (320, 240)])
def test_reduced_scale_keeps_the_center_crop_geometry(height, width):
    # A blob at a known place: where it lands in the 112 × 112 output follows from the
    # resize-then-center-crop geometry alone, whatever the decode scale.
    y0, x0 = 0.45 * height + 0.3, 0.55 * width - 0.7
    clip = encoded_clip([jpeg(blob_image(height, width, y0, x0, sigma=9.0), quality=95)])
    transform = ClipCenterCrop(112, reduced_decode=True)
    plan = transform.plan(height, width)
    assert plan.scale == 2
    new_h, new_w = (112, int(112 * width / height)) if height <= width else \
        (int(112 * height / width), 112)
    top, left = round((new_h - 112) / 2), round((new_w - 112) / 2)
    expected = (y0 * new_h / height - top, x0 * new_w / width - left)
    for scale in (1, plan.scale):
        out = transform.finish(decode_frames(clip, plan.box, scale), plan)[0]
        assert out.shape == (3, 112, 112)
        assert np.allclose(centroid(out), expected, atol=0.05), (scale, centroid(out), expected)


def test_reduced_scale_pixels_stay_within_a_few_grey_levels():
    # Realistic 320 × 240 frames (moving colour fields + sensor noise, ~13 KB each).
    rng = np.random.default_rng(2)
    clip = encoded_clip([realistic_jpeg(rng, phase=k / 3) for k in range(4)])
    transform = ClipCenterCrop(112, reduced_decode=True)
    plan = transform.plan(*clip.frame_size)
    full = transform.finish(decode_frames(clip, plan.box, 1), plan).int()
    reduced = transform.finish(decode_frames(clip, plan.box, plan.scale), plan).int()
    difference = (full - reduced).abs().float()
    assert plan.scale == 2 and reduced.shape == full.shape == (4, 3, 112, 112)
    assert difference.mean() < 1.5
    assert torch.quantile(difference.flatten(), 0.99) <= 5
    assert abs((full - reduced).float().mean()) < 0.2  # no brightness shift


def test_decode_frames_rejects_a_box_off_the_reduced_grid():
    clip = encoded_clip([jpeg(np.zeros((24, 32, 3), np.uint8))])
    with pytest.raises(ValueError, match="multiples of the decode scale 2"):
        decode_frames(clip, box=(1, 0, 10, 10), scale=2)
    with pytest.raises(ValueError, match="not inside"):
        decode_frames(clip, box=(0, 0, 30, 10))


def grey(level: int, width: int = 64, height: int = 48) -> bytes:
    return jpeg(np.full((height, width, 3), level, np.uint8), quality=95)


@pytest.mark.parametrize("scale", [1, 2])
def test_corrupt_frame_is_named_at_every_scale(scale):
    jpegs = [grey(10 * k) for k in range(1, 6)]
    jpegs[2] = b"\xff\xd8 this is not a jpeg"  # frame 3
    with pytest.raises(BadSampleError, match=r"^mem.hdf5: cannot decode JPEG.*\(frame 3\)$"):
        decode_frames(encoded_clip(jpegs), scale=scale)


@pytest.mark.parametrize("scale", [1, 2])
def test_frame_of_another_size_is_named(scale):
    jpegs = [grey(40), grey(80), grey(120, width=32, height=24)]
    with pytest.raises(BadSampleError, match=r"frames of different sizes.*\(frame 3\)$"):
        decode_frames(encoded_clip(jpegs), scale=scale)


def write(path, jpegs):
    write_video_hdf5(path, jpegs)
    return path


def test_unreadable_header_of_the_first_frame_is_named(tmp_path):
    jpegs = [grey(10 * k) for k in range(1, 9)]
    jpegs[3] = b"\xff\xd8\x00 broken header"  # frame 4
    path = write(tmp_path / "v.hdf5", jpegs)
    with pytest.raises(BadSampleError, match=r"v.hdf5: cannot read the JPEG header.*\(frame 4\)$"):
        read_encoded(path, [4, 5, 6])
    assert read_encoded(path, [5, 6, 5]).frame_size == (48, 64)


def test_any_frame_list_is_one_hdf5_selection(tmp_path, monkeypatch):
    path = write(tmp_path / "v.hdf5", [grey(4 * k) for k in range(1, 31)])
    calls = []
    open_dataset = h5py.h5d.open

    class CountingDataset:
        def __init__(self, dataset_id):
            self.dataset_id = dataset_id

        def get_space(self):
            return self.dataset_id.get_space()

        def read(self, *args):
            calls.append(args)
            return self.dataset_id.read(*args)

    monkeypatch.setattr(h5py.h5d, "open", lambda *args: CountingDataset(open_dataset(*args)))
    for numbers in ([9, 11, 13, 9], [2, 7, 30, 7], [17]):
        before = len(calls)
        clip = read_encoded(path, numbers)
        assert len(calls) == before + 1
        levels = [round(d.float().mean().item() / 4) for d in decode_frames(clip)]  # grey 4k
        assert clip.numbers.tolist() == sorted(set(numbers)) == levels
        assert [clip.numbers[i] for i in clip.inverse] == numbers


def test_validation_items_use_the_reduced_scale_and_report_corrupt_frames(tmp_path):
    # 64 × 48 frames, sample size 16: decoded at 1/2 (24 ≥ 16), not 1/4 (12 < 16).
    for video, label in (("bad", "a"), ("good", "b")):
        jpegs = [grey(4 * k) for k in range(1, 21)]
        if video == "bad":
            jpegs[2] = b"\xff\xd8 this is not a jpeg"  # frame 3
        write(tmp_path / "hdf5" / label / f"{video}.hdf5", jpegs)
    annotation = tmp_path / "ann.json"
    annotation.write_text(json.dumps({"labels": ["a", "b"], "database": {
        v: {"subset": "validation", "annotations": {"label": l, "segment": [1, 21]}}
        for v, l in (("bad", "a"), ("good", "b"))}}))
    ds = VideoDataset(tmp_path / "hdf5", annotation, "validation", "val", sample_size=16,
                      n_val_clips=1, reduced_decode=True)
    assert ds.spatial.plan(48, 64).scale == 2
    item = ds[0]
    bad_file = tmp_path / "hdf5" / "a" / "bad.hdf5"
    assert item["video_index"].item() == 1 and len(item["bad"]) == 1
    assert item["bad"][0].startswith(f"{bad_file}: ") and item["bad"][0].endswith("(frame 3)")
    clip = item["clip"].permute(1, 0, 2, 3).float()
    assert clip.shape == (16, 3, 16, 16)
    levels = clip.mean(dim=(1, 2, 3))
    assert (clip - levels.view(-1, 1, 1, 1)).abs().max() <= 2
    assert [round(level / 4) for level in levels.tolist()] == list(range(1, 17))


def test_center_crop_decodes_at_full_scale_unless_asked():
    assert ClipCenterCrop(112).plan(240, 320).scale == 1
    assert ClipCenterCrop(112, reduced_decode=True).plan(240, 320).scale == 2


def test_frames_outside_the_file_are_named(tmp_path):
    path = write(tmp_path / "v.hdf5", [grey(4 * k) for k in range(1, 11)])
    with pytest.raises(BadSampleError, match=r"v.hdf5: frame 12 asked for, the file has 10 frames"):
        read_encoded(path, [9, 10, 11, 12])
    with pytest.raises(BadSampleError, match=r"v.hdf5: frame 0 asked for, the file has 10 frames"):
        read_encoded(path, [0, 1, 2])
    assert read_encoded(path, [10, 1, 5]).numbers.tolist() == [1, 5, 10]
