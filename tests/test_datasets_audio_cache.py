"""The consolidated audio feature cache against direct np.load reads of the same files, and
features of any dimension D."""
import json
import logging
import multiprocessing
import os
import pickle
import re
import time

import numpy as np
import pytest
import torch

from datasets import audio as audio_module
from datasets import audio_cache, collate
from datasets.audio import AudioBank, _read_npy, read_audio_array
from datasets.audio_cache import CACHE_FOLDER, cached_audio_bank
from datasets.config import audio_dim
from datasets.synthetic import write_synthetic_dataset
from datasets.video_dataset import VideoDataset
from errors import UserError

HOUR_AGO = time.time() - 3600


def write_features(root, shapes, dim=512, seed=0, age=HOUR_AGO):
    """One float32 file per shape (None: no file) under root/c<k>/, dated `age` (None: now).
    Returns the per-video paths (None where no file)."""
    rng = np.random.default_rng(seed)
    files = []
    for i, shape in enumerate(shapes):
        if shape is None:
            files.append(None)
            continue
        path = root / f"c{i % 3}" / f"v{i}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, rng.standard_normal(shape).astype(np.float32))
        if age is not None:
            os.utime(path, (age, age))
        files.append(path)
    return files


def rows_by_np_load(files):
    """The oracle: per video the (T, D) rows read with np.load, None without a file."""
    return [None if f is None else np.load(f).reshape(-1, np.load(f).shape[-1]) for f in files]


def bank_rows(bank):
    return [None if a == b else np.asarray(bank.rows[a:b])
            for a, b in zip(bank.offsets[:-1], bank.offsets[1:])]


def assert_same_rows(bank, expected):
    got = bank_rows(bank)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert (g is None and e is None) or np.array_equal(g, e)


SHAPES = [(512,), None, (3, 512), (512,), (1, 512), None, (7, 512)]


@pytest.fixture
def count_reads(monkeypatch):
    """How many feature files the cache reads."""
    calls = []

    def counted(path, dim=None):
        calls.append(path)
        return read_audio_array(path, dim)
    monkeypatch.setattr(audio_cache, "read_audio_array", counted)
    return calls


def test_cache_equals_direct_reads_and_is_reused(tmp_path, count_reads):
    files = write_features(tmp_path, SHAPES)
    expected = rows_by_np_load(files)
    first = cached_audio_bank(files, tmp_path, "train")
    assert len(count_reads) == 5 and isinstance(first.rows, np.memmap)
    assert_same_rows(first, expected)
    assert_same_rows(AudioBank(files), expected)
    again = cached_audio_bank(files, tmp_path, "train")
    assert len(count_reads) == 5           # nothing read: one stat per file
    assert_same_rows(again, expected)
    assert first.reference == (str(files[0]), (512,)) and again.reference == first.reference
    for video in range(len(files)):
        feature, weight = again.feature(video, torch.Generator().manual_seed(video))
        assert weight == float(files[video] is not None) and feature.shape == (512,)
        assert expected[video] is None or any(np.array_equal(feature.numpy(), r)
                                              for r in expected[video])
    names = sorted(p.name for p in (tmp_path / CACHE_FOLDER).iterdir())
    assert len(names) == 3 and names[0] == "train-" + names[0][6:] and names[0].endswith(".f32")
    assert names[1:] == ["train.index.npz", "train.lock"]


@pytest.mark.parametrize("change", ["content", "replaced_older", "resized_same_mtime", "swapped",
                                    "added", "removed"])
def test_a_changed_file_list_or_file_rebuilds_the_cache(tmp_path, count_reads, change):
    files = write_features(tmp_path, SHAPES)
    cached_audio_bank(files, tmp_path, "train")
    old_rows = {p.name for p in (tmp_path / CACHE_FOLDER).glob("*.f32")}
    if change == "content":
        # Same size, later modification time.
        np.save(files[2], np.full((3, 512), 7.0, np.float32))
        os.utime(files[2], (HOUR_AGO + 60, HOUR_AGO + 60))
    elif change == "replaced_older":
        # Another file with an older date moved in: size differs, mtime goes back.
        np.save(files[0], np.ones((2, 512), np.float32))
        os.utime(files[0], (HOUR_AGO - 600, HOUR_AGO - 600))
    elif change == "resized_same_mtime":
        before = os.stat(files[2])
        np.save(files[2], np.ones((4, 512), np.float32))
        os.utime(files[2], ns=(before.st_atime_ns, before.st_mtime_ns))
    elif change == "swapped":
        # Two files of the same size and date trade places by renames.
        os.rename(files[0], tmp_path / "swap.npy")
        os.rename(files[3], files[0])
        os.rename(tmp_path / "swap.npy", files[3])
    elif change == "added":
        files[1] = write_features(tmp_path / "new", [(512,)], seed=5)[0]
    else:
        files[3].unlink()
        files[3] = None
    n_reads = len(count_reads)
    bank = cached_audio_bank(files, tmp_path, "train")
    assert len(count_reads) > n_reads
    assert_same_rows(bank, rows_by_np_load(files))
    # The old rows file is gone, the new one is the only one.
    new_rows = {p.name for p in (tmp_path / CACHE_FOLDER).glob("*.f32")}
    assert len(new_rows) == 1 and not new_rows & old_rows


def test_files_modified_just_before_a_build_are_read_again(tmp_path, count_reads, monkeypatch):
    # A change within the file system's timestamp tick can leave every stamp as it was:
    # here the stamps are frozen, so only the age of the files can tell.
    files = write_features(tmp_path, [(512,), (2, 512)], age=None)
    frozen = audio_cache._list(files, tmp_path)
    monkeypatch.setattr(audio_cache, "_list", lambda *args: frozen)
    cached_audio_bank(files, tmp_path, "train")
    np.save(files[0], np.full(512, 3.0, np.float32))
    bank = cached_audio_bank(files, tmp_path, "train")
    assert len(count_reads) == 4
    assert_same_rows(bank, rows_by_np_load(files))


def test_old_files_with_unchanged_stamps_are_not_read_again(tmp_path, count_reads, monkeypatch):
    files = write_features(tmp_path, [(512,), (2, 512)])
    frozen = audio_cache._list(files, tmp_path)
    monkeypatch.setattr(audio_cache, "_list", lambda *args: frozen)
    first = cached_audio_bank(files, tmp_path, "train")
    assert_same_rows(cached_audio_bank(files, tmp_path, "train"), bank_rows(first))
    assert len(count_reads) == 2


@pytest.mark.parametrize("array, message", [
    (np.zeros(512, np.float64), "dtype float64"),
    (np.zeros((0, 512), np.float32), r"shape \(0, 512\)"),
    (np.zeros((2, 3, 512), np.float32), r"shape \(2, 3, 512\)"),
    (np.array([[0.0] * 512, [np.nan] + [0.0] * 511], np.float32), "NaN or inf"),
])
def test_a_broken_file_is_an_error_naming_it_also_after_a_cache_exists(tmp_path, array, message):
    files = write_features(tmp_path, SHAPES)
    cached_audio_bank(files, tmp_path, "train")
    np.save(files[3], array)
    with pytest.raises(ValueError, match=rf"{files[3]}: .*{message}.*extract_audio_features"):
        cached_audio_bank(files, tmp_path, "train")
    with pytest.raises(ValueError, match=rf"{files[3]}: .*{message}"):
        AudioBank(files)
    assert not list((tmp_path / CACHE_FOLDER).glob("*.tmp"))


def test_a_vanished_file_is_an_error_naming_it(tmp_path):
    files = write_features(tmp_path, SHAPES)
    files[2].unlink()
    with pytest.raises(ValueError, match=rf"{files[2]}: cannot read audio feature"):
        cached_audio_bank(files, tmp_path, "train")


@pytest.mark.parametrize("shapes", [[(256,), None, (4, 256)], [(2048,), (2048,)], [(3, 128)]])
def test_features_of_any_dimension(tmp_path, shapes):
    d = next(s for s in shapes if s)[-1]
    files = write_features(tmp_path, shapes, dim=d)
    expected = rows_by_np_load(files)
    for bank in (AudioBank(files), cached_audio_bank(files, tmp_path, "train")):
        n_rows = sum(len(e) for e in expected if e is not None)
        assert bank.dim == d and bank.rows.shape == (n_rows, d)
        assert_same_rows(bank, expected)
        for video in range(len(files)):
            feature, weight = bank.feature(video)
            assert feature.shape == (d,) and feature.dtype == torch.float32
            assert weight == float(files[video] is not None)


@pytest.mark.parametrize("first, other", [((512,), (256,)), ((3, 512), (2, 2048)),
                                          ((128,), (4, 512))])
def test_mixed_dimensions_are_an_error_naming_the_file_and_both_shapes(tmp_path, first, other):
    files = write_features(tmp_path, [first, None, first, other, first])
    message = (f"{files[3]}: audio feature has shape {other}, but {files[0]} has shape {first}: "
               f"every audio feature file of a run must have the same dimension D; re-extract")
    for build in (AudioBank, lambda f: cached_audio_bank(f, tmp_path, "train")):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}") as info:
            build(files)
        assert "\n" not in str(info.value)


def test_no_file_at_all_gives_the_papers_dimension(tmp_path):
    for bank in (AudioBank([None, None]), cached_audio_bank([None, None], tmp_path, "train")):
        assert bank.dim == 512 and bank.reference is None
        assert bank.feature(1)[0].shape == (512,) and bank.feature(1)[1] == 0.0
    assert not (tmp_path / CACHE_FOLDER).exists()


def test_an_unwritable_audio_folder_falls_back_and_says_so(tmp_path, caplog):
    audio = tmp_path / "audio"
    files = write_features(audio, SHAPES)
    (audio / CACHE_FOLDER).write_text("")   # the cache folder cannot be made there
    unwritable = rf"audio feature cache: cannot write {audio / CACHE_FOLDER} \(.*\); make .* writable"
    with pytest.raises(ValueError, match=unwritable + " or give a writable fallback"):
        cached_audio_bank(files, audio, "train")
    fallback = tmp_path / "result" / CACHE_FOLDER
    with caplog.at_level(logging.WARNING, logger="datasets.audio_cache"):
        bank = cached_audio_bank(files, audio, "train", fallback)
    assert f"cannot write {audio / CACHE_FOLDER}" in caplog.text and str(fallback) in caplog.text
    assert_same_rows(bank, rows_by_np_load(files))
    assert (fallback / "train.index.npz").is_file()


def test_a_valid_cache_is_read_without_the_lock_as_in_a_read_only_folder(tmp_path, count_reads,
                                                                          monkeypatch):
    files = write_features(tmp_path, SHAPES)
    cached_audio_bank(files, tmp_path, "train")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(audio_cache, "_locked", read_only)
    assert_same_rows(cached_audio_bank(files, tmp_path, "train"), rows_by_np_load(files))
    assert len(count_reads) == 5


def _build_in_child(files, root, queue):
    bank = cached_audio_bank(files, root, "train")
    queue.put([None if r is None else r.tolist() for r in bank_rows(bank)])


def test_concurrent_builders_agree_and_leave_one_whole_cache(tmp_path):
    files = write_features(tmp_path, [(4, 512)] * 40)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_build_in_child, args=(files, tmp_path, queue))
                for _ in range(3)]
    for child in children:
        child.start()
    results = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    expected = [r.tolist() for r in rows_by_np_load(files)]
    assert all(result == expected for result in results)
    left = sorted(p.suffix for p in (tmp_path / CACHE_FOLDER).iterdir())
    assert left == [".f32", ".lock", ".npz"]


def test_a_mapped_bank_pickles_as_its_file_name(tmp_path):
    files = write_features(tmp_path, [(64, 512)] * 20)
    bank = cached_audio_bank(files, tmp_path, "train")
    data = pickle.dumps(bank)
    assert len(data) < 20 * 64 * 512 * 4 / 100
    copy = pickle.loads(data)
    assert isinstance(copy.rows, np.memmap) and copy.rows.filename == bank.rows.filename
    assert_same_rows(copy, rows_by_np_load(files))
    in_memory = AudioBank(files)
    assert len(pickle.dumps(in_memory)) > 20 * 64 * 512 * 4


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
    np.arange(5, dtype=">f4"), np.zeros((0, 3), np.float64), np.float32(2.5),
    np.arange(6, dtype=np.int16).reshape(2, 3),
])
def test_npy_reader_matches_np_load(tmp_path, array):
    path = tmp_path / "a.npy"
    np.save(path, array)
    got, expected = _read_npy(path), np.load(path)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_npy_reader_reads_version_2_headers_and_rejects_truncated_files(tmp_path):
    array = np.arange(10, dtype=np.float32)
    path = tmp_path / "v2.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array(f, array, version=(2, 0))
    assert np.array_equal(_read_npy(path), array)
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ValueError, match="36 bytes of data, the header promises 40"):
        _read_npy(path)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="objects"):
        _read_npy(tmp_path / "objects.npy")


def test_dataset_carries_the_files_dimension_to_items_and_batches(tmp_path):
    data = write_synthetic_dataset(tmp_path / "data", n_videos=4, n_frames=8, n_classes=2)
    for path in sorted(data.audio_path.rglob("*.npy")):
        np.save(path, np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32))
        os.utime(path, (HOUR_AGO, HOUR_AGO))
    dataset = VideoDataset(data.video_path, data.annotation_path, "training", mode="train",
                           sample_duration=4, sample_size=32, audio_path=data.audio_path)
    assert dataset.audio_dim == 256
    batch = collate([dataset[(i, i)] for i in range(len(dataset))])
    assert batch["audio"].shape == (len(dataset), 256) and bool((batch["audio_weight"] == 1).all())
    for i in range(len(dataset)):
        rows = np.load(dataset.audio_files[i])
        assert any(np.array_equal(dataset[(i, 7)]["audio"].numpy(), r) for r in rows)
    without = VideoDataset(data.video_path, data.annotation_path, "training", mode="train",
                           sample_duration=4, sample_size=32)
    assert without.audio_dim == 512 and without[0]["audio"].shape == (512,)


def test_audio_dim_constant_is_the_papers():
    assert audio_module.AUDIO_DIM == 512


def test_a_run_needs_one_dimension_across_its_subsets(tmp_path):
    data = write_synthetic_dataset(tmp_path / "data", n_videos=8, n_frames=8, n_classes=2)
    subsets = json.loads(data.annotation_path.read_text())["database"]
    validation = sorted(data.audio_path / label / f"{video_id}.npy"
                        for video_id, entry in subsets.items() if entry["subset"] == "validation"
                        for label in [entry["annotations"]["label"]])
    for path in validation:
        np.save(path, np.zeros((2, 256), np.float32))

    def dataset(subset):
        return VideoDataset(data.video_path, data.annotation_path, subset, mode="val",
                            sample_duration=4, sample_size=32, audio_path=data.audio_path)
    train, val = dataset("training"), dataset("validation")
    assert (train.audio_dim, val.audio_dim) == (512, 256)
    assert audio_dim([train]) == 512 and audio_dim([val]) == 256
    first_train = train.audio_files[0]
    message = (f"{validation[0]}: audio feature has shape (2, 256), but {first_train} has shape "
               f"(512,): every audio feature file of a run must have the same dimension D")
    with pytest.raises(UserError, match=re.escape(message)):
        audio_dim([train, val])
