"""Decoding batches in the training process (--gpu_decode): loader items with undecoded frames
(datasets.encoded), their trip through loader workers, and the clips built of them by
datasets.device_decode, against the clips the loader builds itself.

The decoded path is the oracle: it is tested against PIL and torchvision elsewhere
(test_datasets_spatial.py, test_datasets_decode.py). On the CPU both paths decode with the
same libjpeg-turbo; they differ in the resize only, uint8 there (rounded after each of its
two separable passes) and float32 here (rounded once): each output value differs by less
than one grey level before the final rounding, so by at most 1 after it, and on about as
many pixels as the intermediate rounding moves across a half level (measured 0.13-0.20 of
a grey level on average over 230 crops of realistic frames).
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets import BadSampleError, VideoDataset, build_loader, collate
from datasets.device_decode import clip_to_device, decode_clips
from datasets.hdf5_clip import decode_frames, read_encoded
from datasets.spatial import ClipCenterCrop, ClipRandomResizedCrop
from datasets.synthetic import realistic_jpeg, write_synthetic_dataset, write_video_hdf5
from datasets.video_dataset import UnreadableDataError
from tests.conftest import read_log

T, S = 16, 112
CPU = torch.device("cpu")
BROKEN = b"\x00" * 64   # not a JPEG at all: every decoder refuses it


def frames(rng, n: int, width: int = 320, height: int = 240) -> list[bytes]:
    return [realistic_jpeg(rng, phase=rng.uniform(0, 6), width=width, height=height) for _ in range(n)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """Videos in the on-disk format: "training" ones all readable, of two frame sizes and two
    lengths (10 frames < T: loop padded); "validation" holds one readable video, one with an
    undecodable frame 3 and one whose frame 2 has another size."""
    root = tmp_path_factory.mktemp("encoded")
    rng = np.random.default_rng(0)
    videos = {
        "wide_a": ("training", frames(rng, 20)),
        "wide_b": ("training", frames(rng, 18)),
        "tall": ("training", frames(rng, 20, width=240, height=320)),
        "short": ("training", frames(rng, 10)),
        "good": ("validation", frames(rng, 16)),
        "broken": ("validation", frames(rng, 2) + [BROKEN] + frames(rng, 13)),
        "mixed": ("validation", frames(rng, 1) + frames(rng, 1, width=160, height=120) + frames(rng, 14)),
    }
    database = {}
    for k, (name, (subset, jpegs)) in enumerate(videos.items()):
        label = f"c{k % 2}"
        write_video_hdf5(root / "hdf5" / label / f"{name}.hdf5", jpegs)
        database[name] = {"subset": subset, "annotations": {"label": label, "segment": [1, len(jpegs) + 1]}}
    annotation = root / "data.json"
    annotation.write_text(json.dumps({"labels": ["c0", "c1"], "database": database}))
    return {"video_path": root / "hdf5", "annotation_path": annotation}


def dataset(data: dict, subset: str, mode: str, encoded: bool) -> VideoDataset:
    return VideoDataset(data["video_path"], data["annotation_path"], subset, mode=mode,
                        sample_duration=T, sample_size=S, encoded=encoded, max_retries=0)


def keys(ds: VideoDataset, mode: str) -> list:
    return [(i, 1000 + 17 * i) for i in range(len(ds))] if mode == "train" else list(range(len(ds)))


@pytest.mark.parametrize("mode", ["train", "val"])
def test_encoded_items_carry_the_draws_of_decoded_items(data, mode):
    """The plan an encoded item carries, applied by the loader's own uint8 transform to the
    fully decoded frames, gives exactly the decoded item's clip: the same temporal crop and
    the same spatial draws from the same item seed."""
    decoded, encoded = dataset(data, "training", mode, False), dataset(data, "training", mode, True)
    transform = ClipRandomResizedCrop(S) if mode == "train" else ClipCenterCrop(S)
    for key in keys(encoded, mode):
        item, expected = encoded[key], decoded[key]
        clip, plan = item["encoded"].clip, item["encoded"].plan
        frames = read_encoded(clip.path, clip.numbers.tolist())
        full = decode_frames(frames)[frames.inverse][clip.inverse]
        top, left, h, w = plan.box
        rebuilt = transform.finish(full[..., top:top + h, left:left + w].contiguous(
            memory_format=torch.channels_last), plan)
        assert torch.equal(rebuilt, expected["clip"].permute(1, 0, 2, 3)), key
        for field in ("target", "audio", "audio_weight", "video_index"):
            assert torch.equal(item[field], expected[field])
        assert item["bad"] == expected["bad"] == []


def assert_close_to_loader_clips(clip: torch.Tensor, expected: torch.Tensor) -> None:
    """Within the rounding bound of the module docstring: max 1, mean well under 0.5."""
    assert clip.shape == expected.shape and clip.dtype == torch.uint8
    diff = (clip.int() - expected.int()).abs()
    assert diff.max() <= 1 and diff.float().mean() < 0.5, (int(diff.max()), float(diff.float().mean()))


@pytest.mark.parametrize("mode", ["train", "val", "inference"])
def test_encoded_batches_rebuild_the_loader_clips(data, mode):
    decoded, encoded = dataset(data, "training", mode, False), dataset(data, "training", mode, True)
    batch_keys = keys(encoded, mode)
    expected = collate([decoded[k] for k in batch_keys])
    batch = clip_to_device(collate([encoded[k] for k in batch_keys]), CPU)
    assert "encoded" not in batch and batch["bad"] == []
    assert batch["clip"].is_contiguous(memory_format=torch.channels_last_3d)
    assert_close_to_loader_clips(batch["clip"], expected["clip"])
    for field in ("target", "audio", "audio_weight", "video_index"):
        assert torch.equal(batch[field], expected[field])


def test_encoded_batches_cross_worker_processes_intact(data):
    encoded = dataset(data, "training", "val", True)
    in_process = [clip_to_device(b, CPU) for b in build_loader(encoded, 3, shuffle=False, n_threads=0)]
    loader = build_loader(encoded, 3, shuffle=False, n_threads=1)
    received = list(loader)
    assert all(b["encoded"].data.is_shared() for b in received)   # one segment, no copy
    assert len(received) == len(in_process)
    for batch, expected in zip(received, in_process):
        batch = clip_to_device(batch, CPU)
        assert batch.keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(batch[key], value) if key != "bad" else batch[key] == value


def first_clip(ds: VideoDataset, name: str) -> int:
    """The index of the first item (clip) of video `name`."""
    return int(np.flatnonzero(ds.item_video_index == ds.video_ids.index(name))[0])


def validation_batch(data: dict, names: list[str]) -> tuple[dict, VideoDataset]:
    """The encoded items of the named validation videos (first clip each), collated."""
    ds = dataset(data, "validation", "val", True)
    return collate([ds[first_clip(ds, name)] for name in names]), ds


@pytest.mark.parametrize("name, problem", [("broken", "cannot decode JPEG"),
                                           ("mixed", "frames of different sizes")])
def test_an_undecodable_clip_is_replaced_and_recorded_as_the_loader_does(data, name, problem):
    batch, ds = validation_batch(data, ["good", name, "good"])
    path = ds.hdf5_files[ds.video_ids.index(name)]
    with pytest.raises(BadSampleError) as loader_error:   # the loader's own record of it
        decode_frames(read_encoded(path, ds.frame_numbers(first_clip(ds, name))))
    out = clip_to_device(batch, CPU)
    assert out["bad"] == [str(loader_error.value)]
    assert str(path) in out["bad"][0] and problem in out["bad"][0]
    # Row 1 is row 2 (the next decodable clip) in every field; rows 0 and 2 are as decoded alone.
    good = clip_to_device(collate([ds[first_clip(ds, "good")]]), CPU)
    for field in ("clip", "target", "audio", "audio_weight", "video_index"):
        for row in range(3):
            assert torch.equal(out[field][row], good[field][0]), (field, row)


def test_a_batch_without_a_decodable_clip_is_unreadable_data(data):
    batch, _ = validation_batch(data, ["broken", "mixed"])
    with pytest.raises(UnreadableDataError, match="no clip of a batch of 2 could be decoded"):
        clip_to_device(batch, CPU)


def test_a_clip_only_the_device_decoder_refuses_is_named(data, monkeypatch):
    """A frame the CPU decodes but the device decoder does not (stood in for here by a decoder
    that refuses one frame) is recorded with the file and the device decoder's message."""
    import datasets.device_decode as device_decode
    batch, ds = validation_batch(data, ["good", "good"])
    refused = batch["encoded"].frames()[T + 4].data_ptr()   # a frame of clip 1
    real = device_decode.decode_jpeg

    def refusing(jpegs, mode, device):
        if any(j.data_ptr() == refused for j in jpegs):
            raise RuntimeError("unsupported JPEG")
        return real(jpegs, mode=mode, device=device)

    monkeypatch.setattr(device_decode, "decode_jpeg", refusing)
    clip, bad = decode_clips(batch["encoded"], CPU)
    path = ds.hdf5_files[ds.video_ids.index("good")]
    assert bad == {1: f"{path}: the cpu JPEG decoder fails where the CPU one does not (unsupported JPEG)"}


def run_options(data, result: Path, *extra: str) -> list[str]:
    """main.py options for a seconds-long run on write_synthetic_dataset's videos (h5py and
    Pillow only, so it runs where PyAV is missing)."""
    return ["--video_path", str(data.video_path), "--annotation_path", str(data.annotation_path),
            "--audio_path", str(data.audio_path), "--result_path", str(result), "--n_classes", "5",
            "--sample_size", "32", "--sample_duration", "8", "--batch_size", "4", "--n_threads", "0",
            "--learning_rate", "0.01", "--no-tensorboard", *extra]


def run_main(argv: list[str]) -> int:
    import main   # here, not at the top: the other tests need no PyAV (main imports the demo)
    return main.main(argv)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), 10, n_frames=12)


def test_gpu_decode_with_reduced_decode_is_a_user_error(synthetic, tmp_path, capsys):
    argv = run_options(synthetic, tmp_path / "run", "--no_cuda", "--gpu_decode", "--eval_reduced_decode")
    assert run_main(argv) == 2
    assert capsys.readouterr().err.startswith("error: --eval_reduced_decode decodes at reduced scale")


def test_gpu_decode_on_the_cpu_infers_what_the_loader_path_infers(synthetic, tmp_path):
    """Video features of one checkpoint with frames decoded in the training process against
    decoded by the loader. The inputs differ by at most one grey level: the features move by
    about 2% of how much they vary between videos (a crop taken at the wrong place moves
    them by 130%)."""
    from models import build_student
    torch.manual_seed(0)
    torch.save({"epoch": 1, "arch": "r21d-18", "state_dict": build_student("r21d", 18, 5).state_dict()},
               tmp_path / "save_1.pth")
    features = []
    for flags in ([], ["--gpu_decode"]):
        result = tmp_path / ("gpu_decode" if flags else "loader")
        argv = run_options(synthetic, result, "--no_cuda", "--no_train", "--no_val", "--inference",
                           "--resume_path", str(tmp_path / "save_1.pth"), *flags)
        assert run_main(argv) == 0
        saved = np.load(result / "features_validation.npz")
        features.append((list(saved["ids"]), saved["features"]))
    (ids, expected), (gpu_ids, got) = features
    assert ids == gpu_ids and len(ids) > 1
    between_videos = np.abs(expected - expected.mean(0)).mean()
    assert np.abs(got - expected).mean() < 0.1 * between_videos


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_main_gpu_decode_trains_validates_and_infers(synthetic, tmp_path, capsys, device):
    """main.py with loader workers (and pinned memory on CUDA), every batch decoded in the
    training process: by nvJPEG on CUDA (default mode: bf16, channels_last_3d). On the CPU
    the untrained image teacher's calibration batch is decoded too (on CUDA it is the same
    CPU code, left out to keep the GPU run short)."""
    result = tmp_path / "run"
    on_cpu = ["--no_cuda", "--use_image", "--allow_untrained_teacher"] if device == "cpu" else []
    argv = run_options(synthetic, result, "--gpu_decode", "--n_epochs", "1", "--use_audio", "--inference",
                       *on_cpu)
    argv[argv.index("--n_threads") + 1] = "2"
    assert run_main(argv) == 0, capsys.readouterr().err[-3000:]
    train, = read_log(result / "train.log")
    assert math.isfinite(float(train["loss"])) and train["bad_samples"] == "0", train
    assert len(read_log(result / "val.log")) == 1
    database = json.loads(Path(synthetic.annotation_path).read_text())["database"]
    validation = sorted(k for k, v in database.items() if v["subset"] == "validation")
    assert sorted(json.loads((result / "val.json").read_text())["results"]) == validation


# On CUDA: nvJPEG against libjpeg-turbo. Their IDCTs and chroma upsampling differ, so the
# decoded frames differ by a few grey levels; torchvision's own test of its CUDA decoder
# bounds the mean absolute difference per image by 2 grey levels, and the antialiased
# downscale of the clips averages it further. On the CPU the same tests compare the CPU
# decoder with itself (and check the tests).

@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_decoding_on_the_device_matches_the_cpu(data, device):
    from torchvision.io import ImageReadMode, decode_jpeg
    encoded = dataset(data, "training", "train", True)
    batch = collate([encoded[k] for k in keys(encoded, "train")])["encoded"]
    jpegs = batch.frames()
    on_device = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)
    on_cpu = decode_jpeg(jpegs, mode=ImageReadMode.RGB)
    frame_means = []
    for f, (a, b) in enumerate(zip(on_device, on_cpu)):
        assert a.device.type == device and a.shape == b.shape, (f, a.shape, b.shape)
        frame_means.append(float((a.cpu().float() - b.float()).abs().mean()))
    clip, bad = decode_clips(batch, torch.device(device))
    expected, expected_bad = decode_clips(batch, CPU)
    assert bad == expected_bad == {}
    assert clip.device.type == device and clip.shape == expected.shape == (len(batch), 3, T, S, S)
    assert clip.is_contiguous(memory_format=torch.channels_last_3d)
    diff = (clip.cpu().float() - expected.float()).abs()
    per_clip = diff.mean(dim=(1, 2, 3, 4))
    # The clips' content is not flat: a horizontally mirrored clip is far off this bound.
    mirrored = (expected.flip(-1).float() - expected.float()).abs().mean()
    measured = {"test": "gpu_decode_against_cpu_decode", "device": device,
                "frame_mean_abs_max": max(frame_means), "clip_mean_abs_max": float(per_clip.max()),
                "clip_abs_max": float(diff.max()), "mirrored_mean_abs": float(mirrored)}
    print("MEASURED", json.dumps(measured), flush=True)
    assert max(frame_means) < 2, f"mean |{device} - cpu| per frame: {frame_means}"
    assert per_clip.max() < 2 < mirrored, (per_clip.tolist(), float(mirrored), float(diff.max()))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_decoding_on_the_device_replaces_an_undecodable_clip(data, device):
    batch, ds = validation_batch(data, ["good", "broken", "good"])
    out = clip_to_device(batch, torch.device(device))
    path = ds.hdf5_files[ds.video_ids.index("broken")]
    assert len(out["bad"]) == 1 and out["bad"][0].startswith(f"{path}: cannot decode JPEG"), out["bad"]
    assert out["clip"].device.type == device
    assert torch.equal(out["clip"][1], out["clip"][2]) and torch.equal(out["target"][1], out["target"][2])


class MeanStudent(torch.nn.Module):
    """A stand-in student: two logits, the clip's channel means as features."""

    def forward(self, clip):
        features = clip.float().mean(dim=(2, 3, 4))
        return features[:, :2], features


def test_an_undecodable_window_at_inference_stops_as_the_loader_path_does(data):
    """At inference nothing stands in for a window: decoded in the training process, an
    undecodable one is the error of the loader path, not a copy of the next clip of its batch
    in some video's average."""
    from evaluation.video_predictions import predict_videos
    errors = []
    for encoded in (False, True):
        ds = VideoDataset(data["video_path"], data["annotation_path"], "validation", mode="inference",
                          sample_duration=T, sample_size=S, encoded=encoded)
        with pytest.raises(UnreadableDataError) as error:
            predict_videos(MeanStudent(), build_loader(ds, len(ds), shuffle=False, n_threads=0), ds.n_videos,
                           CPU, lambda clip: clip.float())
        errors.append(str(error.value))
    path = ds.hdf5_files[ds.video_ids.index("broken")]
    assert errors[0].startswith(f"unreadable video at inference: {path}: cannot decode JPEG")
    assert errors[1] == errors[0]


def test_a_validation_clip_the_device_cannot_decode_is_logged(data, caplog):
    from training.engine import validate
    from training.precision import SpeedMode
    batch, ds = validation_batch(data, ["good", "broken", "good"])
    with caplog.at_level("WARNING", logger="ccl"):
        validate(MeanStudent(), [batch], CPU, (0.0,) * 3, (1.0,) * 3, SpeedMode(None, False))
    path = ds.hdf5_files[ds.video_ids.index("broken")]
    replaced = [r.getMessage() for r in caplog.records if "unreadable sample replaced" in r.getMessage()]
    assert len(replaced) == 1 and replaced[0].startswith(f"unreadable sample replaced: {path}: cannot decode JPEG")
