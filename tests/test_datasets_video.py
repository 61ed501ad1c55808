"""HDF5 clip reading and the VideoDataset items (DESIGN.md contract), on tiny files written here.

Frame k of every test video is a flat grey JPEG of level 4k, so the decoded pixels say which
frame was read, whatever resize or crop was applied.
"""
import io
import json
import warnings

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from datasets import VideoDataset, build_loader, collate
from datasets.video_dataset import UnreadableDataError
from datasets.hdf5_clip import decode_frames, read_encoded
from datasets.synthetic import write_synthetic_dataset
from datasets.temporal import even_starts, window_starts

W, H = 32, 24


def grey_jpeg(level: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((H, W, 3), level, np.uint8)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_hdf5(path, jpegs):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("video", (len(jpegs),), dtype=h5py.vlen_dtype(np.uint8))
        for i, data in enumerate(jpegs):
            d[i] = np.frombuffer(data, np.uint8)


def write_video(path, n_frames):
    write_hdf5(path, [grey_jpeg(4 * k) for k in range(1, n_frames + 1)])


def frame_numbers_of(clip: torch.Tensor) -> list[int]:
    """clip (3, T, S, S) or (T, 3, S, S) of flat grey frames → the frame number of each."""
    if clip.shape[0] == 3:
        clip = clip.permute(1, 0, 2, 3)
    levels = clip.float().mean(dim=(1, 2, 3))
    assert (clip.float() - levels.view(-1, 1, 1, 1)).abs().max() <= 2  # flat frames stay flat
    return [round(level / 4) for level in levels.tolist()]


def make_dataset(tmp_path, videos, labels=("a", "b")):
    """videos: {id: (label or None, n_frames, subset)}; writes HDF5 files + annotation JSON."""
    database = {}
    for vid, (label, n_frames, subset) in videos.items():
        if label is None:
            database[vid] = {"subset": subset, "annotations": {}, "video": f"test/{vid}"}
            stem = f"test/{vid}"
        else:
            database[vid] = {"subset": subset,
                             "annotations": {"label": label, "segment": [1, n_frames + 1]}}
            stem = f"{label}/{vid}"
        if n_frames > 0:
            write_video(tmp_path / "hdf5" / f"{stem}.hdf5", n_frames)
    annotation = tmp_path / "ann.json"
    annotation.write_text(json.dumps({"labels": list(labels), "database": database}))
    return tmp_path / "hdf5", annotation


def read_clip(path, numbers):
    """(T, 3, H, W) uint8, frame t = frame number numbers[t], decoded at full size."""
    encoded = read_encoded(path, numbers)
    return decode_frames(encoded)[encoded.inverse]


def test_read_clip_returns_the_asked_frames_in_order_with_repeats(tmp_path):
    write_video(tmp_path / "v.hdf5", 40)
    for numbers in ([3, 4, 5, 6], [38, 39, 40, 38, 39, 40, 38], [1], [7, 2, 7, 30]):
        clip = read_clip(tmp_path / "v.hdf5", numbers)
        assert clip.shape == (len(numbers), 3, H, W) and clip.dtype == torch.uint8
        assert frame_numbers_of(clip) == numbers


def test_train_items_are_random_consecutive_crops(tmp_path):
    video_path, annotation = make_dataset(
        tmp_path, {"v1": ("a", 30, "training"), "v2": ("b", 5, "training")})
    ds = VideoDataset(video_path, annotation, "training", "train", sample_duration=16,
                      sample_size=16)
    assert ds.video_ids == ["v1", "v2"] and ds.video_labels == [0, 1] and len(ds) == 2
    torch.manual_seed(0)
    starts = set()
    for _ in range(60):
        item = ds[0]
        assert item["clip"].shape == (3, 16, 16, 16) and item["clip"].dtype == torch.uint8
        numbers = frame_numbers_of(item["clip"])
        # starts 0 .. 30 - 16 - 1 of the frame list, as the original's random crop draws them
        assert numbers == list(range(numbers[0], numbers[0] + 16)) and 1 <= numbers[0] <= 14
        starts.add(numbers[0])
        assert item["target"].dtype == torch.int64 and item["target"].item() == 0
        assert item["video_index"].item() == 0 and item["bad"] == []
        assert item["audio"].shape == (512,) and item["audio_weight"].item() == 0.0
    assert len(starts) > 8  # the crop start does vary
    short = ds[1]
    assert frame_numbers_of(short["clip"]) == [1, 2, 3, 4, 5] * 3 + [1]  # loop padding


def test_val_items_are_even_crops_of_each_video(tmp_path):
    lengths = {"v33": 33, "v17": 17, "v10": 10}
    video_path, annotation = make_dataset(
        tmp_path, {k: ("a", n, "validation") for k, n in lengths.items()})
    ds = VideoDataset(video_path, annotation, "validation", "val", sample_size=16)
    assert len(ds) == sum(len(even_starts(n, 16, 3)) for n in lengths.values()) == 3 + 3 + 1
    clips = [(ds.video_ids[ds[i]["video_index"]], frame_numbers_of(ds[i]["clip"]))
             for i in range(len(ds))]
    assert clips == [
        ("v33", list(range(1, 17))), ("v33", list(range(9, 25))), ("v33", list(range(17, 33))),
        ("v17", list(range(1, 17))), ("v17", list(range(2, 18))),
        ("v17", list(range(3, 18)) + [3]),
        ("v10", list(range(1, 11)) + list(range(1, 7)))]


def test_inference_items_are_non_overlapping_windows(tmp_path):
    lengths = {"n1": 1, "n15": 15, "n16": 16, "n17": 17, "n33": 33}
    video_path, annotation = make_dataset(
        tmp_path, {k: ("b", n, "validation") for k, n in lengths.items()})
    ds = VideoDataset(video_path, annotation, "validation", "inference", sample_size=16)
    per_video = np.bincount(ds.item_video_index, minlength=ds.n_videos).tolist()
    assert per_video == [1, 1, 1, 2, 3]
    assert sum(len(window_starts(n, 16, 16)) for n in lengths.values()) == len(ds)
    windows = [frame_numbers_of(ds[i]["clip"]) for i in range(len(ds))]
    assert windows[0] == [1] * 16
    assert windows[1] == list(range(1, 16)) + [1]
    assert windows[4] == [17] * 16
    assert windows[5:] == [list(range(1, 17)), list(range(17, 33)), [33] * 16]
    assert all(ds[i]["target"].item() == 1 for i in range(len(ds)))


def test_unlabeled_samples_without_segment_use_all_frames(tmp_path):
    video_path, annotation = make_dataset(tmp_path, {"t1": (None, 20, "testing")})
    ds = VideoDataset(video_path, annotation, "testing", "inference", sample_size=16)
    assert ds.video_labels == [-1] and len(ds) == 2
    assert ds[0]["target"].item() == -1
    assert frame_numbers_of(ds[1]["clip"]) == [17, 18, 19, 20] * 4


def test_missing_hdf5_left_out_with_one_warning_or_strict_error(tmp_path):
    videos = {f"m{i}": ("a", 0, "training") for i in range(7)}  # 0 frames: no file written
    videos["ok"] = ("a", 20, "training")
    video_path, annotation = make_dataset(tmp_path, videos)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = VideoDataset(video_path, annotation, "training", "train", sample_size=16)
    assert ds.video_ids == ["ok"]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "7 of 8" in message and "m0, m1, m2, m3, m4)" in message and "m5" not in message
    assert str(annotation) in message
    with pytest.raises(FileNotFoundError, match="7 of 8"):
        VideoDataset(video_path, annotation, "training", "train", strict=True)


def test_corrupt_jpeg_is_replaced_and_reported(tmp_path):
    video_path, annotation = make_dataset(
        tmp_path, {"bad": ("a", 20, "training"), "good": ("b", 20, "training")})
    bad_file = video_path / "a" / "bad.hdf5"
    jpegs = [grey_jpeg(4 * k) for k in range(1, 21)]
    jpegs[2] = b"\xff\xd8 this is not a jpeg"  # frame 3
    write_hdf5(bad_file, jpegs)
    ds = VideoDataset(video_path, annotation, "training", "val", sample_size=16, n_val_clips=1)
    item = ds[0]
    assert item["video_index"].item() == 1 and item["target"].item() == 1  # the other video
    assert len(item["bad"]) == 1
    assert item["bad"][0].startswith(f"{bad_file}: ") and item["bad"][0].endswith("(frame 3)")
    assert frame_numbers_of(item["clip"]) == list(range(1, 17))


def test_truncated_hdf5_is_replaced_and_reported(tmp_path):
    video_path, annotation = make_dataset(
        tmp_path, {"cut": ("a", 20, "training"), "good": ("b", 20, "training")})
    cut = video_path / "a" / "cut.hdf5"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    ds = VideoDataset(video_path, annotation, "training", "train", sample_size=16)
    item = ds[0]
    assert item["video_index"].item() == 1
    assert len(item["bad"]) == 1 and item["bad"][0].startswith(f"{cut}: ")


def test_segment_beyond_the_file_is_a_bad_sample(tmp_path):
    video_path, annotation = make_dataset(tmp_path, {"v": ("a", 10, "training"),
                                                     "w": ("a", 10, "training")})
    data = json.loads(annotation.read_text())
    data["database"]["v"]["annotations"]["segment"] = [1, 31]
    annotation.write_text(json.dumps(data))
    ds = VideoDataset(video_path, annotation, "training", "val", sample_size=16)
    bad_items = [ds[i]["bad"] for i in range(len(ds)) if ds.item_video_index[i] == 0]
    assert all(len(b) >= 1 and "frame" in b[0] for b in bad_items[1:])
    # At inference nothing stands in for a window: the first unreadable one stops the pass.
    ds = VideoDataset(video_path, annotation, "training", "inference", sample_size=16)
    last = max(i for i in range(len(ds)) if ds.item_video_index[i] == 0)
    with pytest.raises(UnreadableDataError, match="unreadable video at inference: .*frame"):
        ds[last]


def test_all_samples_bad_raises_after_bounded_retries(tmp_path):
    video_path, annotation = make_dataset(tmp_path, {"x": ("a", 20, "training")})
    (video_path / "a" / "x.hdf5").write_bytes(b"not an hdf5 file at all")
    ds = VideoDataset(video_path, annotation, "training", "train", sample_size=16,
                      max_retries=3)
    with pytest.raises(RuntimeError, match="4 unreadable samples in a row"):
        ds[0]


def test_collate_and_loader_batch(tmp_path):
    video_path, annotation = make_dataset(
        tmp_path, {f"v{i}": ("ab"[i % 2], 18 + i, "training") for i in range(5)})
    ds = VideoDataset(video_path, annotation, "training", "train", sample_size=16)
    items = [ds[i] for i in range(3)]
    items[1]["bad"] = ["f1: x (frame 2)", "f2: y"]
    batch = collate(items)
    assert batch["clip"].shape == (3, 3, 16, 16, 16) and batch["clip"].dtype == torch.uint8
    assert batch["target"].tolist() == [0, 1, 0]
    assert batch["audio"].shape == (3, 512) and batch["audio_weight"].shape == (3,)
    assert batch["bad"] == ["f1: x (frame 2)", "f2: y"]
    assert torch.equal(batch["clip"][1], items[1]["clip"])
    # Stacked in the items' memory order: a plain copy, and the student's GPU layout.
    assert batch["clip"].is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(batch["clip"], torch.stack([item["clip"].contiguous() for item in items]))
    # An item in another layout (here contiguous) is stacked to the same values.
    items[2]["clip"] = items[2]["clip"].contiguous()
    assert torch.equal(collate(items)["clip"], batch["clip"])

    torch.manual_seed(0)
    loader = build_loader(ds, batch_size=2, shuffle=False, n_threads=0)
    batches = list(loader)
    assert [len(b["target"]) for b in batches] == [2, 2, 1]
    assert torch.cat([b["video_index"] for b in batches]).tolist() == [0, 1, 2, 3, 4]


def test_worker_loader_is_reproducible_with_a_seed(tmp_path):
    video_path, annotation = make_dataset(
        tmp_path, {f"v{i}": ("ab"[i % 2], 40, "training") for i in range(4)})
    ds = VideoDataset(video_path, annotation, "training", "train", sample_size=16)

    def first_epoch(seed):
        loader = build_loader(ds, batch_size=4, shuffle=True, n_threads=1, seed=seed)
        return [(b["video_index"].tolist(), frame_numbers_of(c)[0])
                for b in loader for c in b["clip"]]

    run = first_epoch(3)
    assert run == first_epoch(3)
    assert run != first_epoch(4)


def test_a_training_epoch_is_the_same_with_any_number_of_workers_and_after_a_restart(tmp_path):
    # Items carry their own augmentation seeds (SeededSampler), so what a worker's RNG has
    # drawn before, and which process loads an item, do not enter. Textured frames, so the
    # spatial crop and flip show in the pixels.
    data = write_synthetic_dataset(tmp_path, 6, 24)
    ds = VideoDataset(data.video_path, data.annotation_path, "training", "train",
                      sample_duration=4, sample_size=32, audio_path=data.audio_path)

    def epochs(n_threads, first, last):
        loader = build_loader(ds, batch_size=2, shuffle=True, n_threads=n_threads, seed=5)
        runs = []
        for epoch in range(first, last + 1):
            loader.sampler.set_epoch(epoch)
            batches = list(loader)
            runs.append([torch.cat([b["clip"] for b in batches]),
                         torch.cat([b["video_index"] for b in batches])])
        return runs

    in_process = epochs(0, 1, 3)
    torch.manual_seed(123)  # the global RNG does not enter either
    assert_runs_equal(epochs(2, 1, 3), in_process)  # persistent workers, epochs 1-3
    assert_runs_equal(epochs(1, 3, 3), in_process[2:])  # fresh workers from epoch 3
    assert not torch.equal(in_process[0][0], in_process[1][0])  # epochs differ


def assert_runs_equal(runs, expected):
    assert len(runs) == len(expected)
    for (clips, videos), (clips_ref, videos_ref) in zip(runs, expected):
        assert torch.equal(videos, videos_ref) and torch.equal(clips, clips_ref)


def test_a_seeded_key_gives_the_same_item_whatever_the_global_rng(tmp_path):
    video_path, annotation = make_dataset(tmp_path, {"v": ("a", 60, "training")})
    # A (T, 512) audio feature: one row is drawn per item, from the item's seed too.
    rows = np.arange(40 * 512, dtype=np.float32).reshape(40, 512)
    (tmp_path / "audio" / "a").mkdir(parents=True)
    np.save(tmp_path / "audio" / "a" / "v.npy", rows)
    ds = VideoDataset(video_path, annotation, "training", "train", sample_size=16,
                      audio_path=tmp_path / "audio")
    torch.manual_seed(0)
    first = ds[(0, 77)]
    torch.manual_seed(1)
    again = ds[(0, 77)]
    assert torch.equal(again["clip"], first["clip"]) and torch.equal(again["audio"], first["audio"])
    items = [ds[(0, seed)] for seed in range(8)]
    assert len({tuple(frame_numbers_of(item["clip"])) for item in items}) > 1  # seeds do draw
    assert len({int(item["audio"][0]) // 512 for item in items}) > 1


def test_temporal_stride_spaces_the_frames(tmp_path):
    video_path, annotation = make_dataset(tmp_path, {"v": ("a", 50, "training")})
    ds = VideoDataset(video_path, annotation, "training", "train", sample_duration=8,
                      sample_size=16, t_stride=2)
    torch.manual_seed(1)
    for _ in range(10):
        numbers = frame_numbers_of(ds[0]["clip"])
        assert numbers == list(range(numbers[0], numbers[0] + 16, 2)) and numbers[0] % 2 == 1
    windows = VideoDataset(video_path, annotation, "training", "inference", sample_duration=8,
                           sample_size=16, inference_stride=8, t_stride=2)
    assert [frame_numbers_of(windows[i]["clip"]) for i in range(len(windows))] == [
        list(range(1, 17, 2)), list(range(17, 33, 2)), list(range(33, 49, 2)),
        [49, 49, 49, 49, 49, 49, 49, 49]]
