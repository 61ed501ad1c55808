"""Audio feature loading (SPEC §1), on files written here and on the released UCF features."""
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.audio import AUDIO_DIM, AudioBank


def load_audio_feature(path):
    """One file's feature and weight, as a dataset item gets them."""
    return AudioBank([path], AUDIO_DIM).feature(0)

SHARED = Path(__file__).resolve().parents[2] / "shared"
TARBALL = SHARED / "data" / "UCF101" / "audiocnn14embed512_features.tar.gz"


def test_single_embedding_is_used_directly(tmp_path):
    x = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    feature, weight = load_audio_feature(tmp_path / "a.npy")
    assert feature.dtype == torch.float32 and weight == 1.0
    assert np.array_equal(feature.numpy(), x)


def test_sequence_gives_a_random_row_each_load(tmp_path):
    rows = np.arange(4, dtype=np.float32)[:, None] * np.ones((1, 512), np.float32)
    np.save(tmp_path / "seq.npy", rows)
    torch.manual_seed(0)
    drawn = []
    for _ in range(400):
        feature, weight = load_audio_feature(tmp_path / "seq.npy")
        assert weight == 1.0 and (feature == feature[0]).all()
        drawn.append(int(feature[0]))
    counts = np.bincount(drawn, minlength=4)
    assert len(counts) == 4 and (np.abs(counts - 100) < 40).all()


def test_missing_audio_is_zeros_with_weight_zero():
    feature, weight = load_audio_feature(None)
    assert weight == 0.0 and feature.shape == (512,) and not feature.any()


def test_bank_holds_every_video_row_in_memory(tmp_path):
    rng = np.random.default_rng(1)
    single = rng.standard_normal(512).astype(np.float32)
    rows = rng.standard_normal((3, 512)).astype(np.float32)
    np.save(tmp_path / "single.npy", single)
    np.save(tmp_path / "rows.npy", rows)
    bank = AudioBank([tmp_path / "single.npy", None, tmp_path / "rows.npy", None])
    (tmp_path / "single.npy").unlink()  # nothing is read after construction
    (tmp_path / "rows.npy").unlink()
    assert len(bank) == 4 and bank.rows.shape == (4, 512)
    feature, weight = bank.feature(0)
    assert weight == 1.0 and np.array_equal(feature.numpy(), single)
    feature[0] = 1e9  # items own their feature: the bank is unchanged
    assert np.array_equal(bank.feature(0)[0].numpy(), single)
    for video in (1, 3):
        feature, weight = bank.feature(video)
        assert weight == 0.0 and not feature.any()
    torch.manual_seed(0)
    drawn = {int(np.argmax([np.array_equal(bank.feature(2)[0].numpy(), r) for r in rows]))
             for _ in range(60)}
    assert drawn == {0, 1, 2}


def test_empty_bank():
    assert len(AudioBank([])) == 0


@pytest.mark.parametrize("array, message", [
    (np.zeros(256, np.float32), r"shape \(256,\)"),
    (np.zeros((3, 128), np.float32), r"shape \(3, 128\)"),
    (np.zeros((0, 512), np.float32), r"shape \(0, 512\)"),
    (np.zeros(512, np.float64), "dtype float64"),
    (np.array([np.nan] + [0.0] * 511, np.float32), "NaN or inf"),
    (np.array([[0.0] * 512, [np.inf] + [0.0] * 511], np.float32), "NaN or inf"),
])
def test_broken_features_name_the_file(tmp_path, array, message):
    path = tmp_path / "broken.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=rf"broken\.npy: .*{message}"):
        load_audio_feature(path)


def test_unreadable_file_names_the_file(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"no numpy header")
    with pytest.raises(ValueError, match=r"junk\.npy: cannot read audio feature"):
        load_audio_feature(tmp_path / "junk.npy")


@pytest.mark.skipif(not TARBALL.is_file(), reason="shared UCF101 audio features not present")
def test_released_ucf_features_load(tmp_path):
    # Stream through the archive and extract only the first few features; the macOS
    # "._audiocnn14embed512_features" entry at the top level is not a feature and is skipped.
    extracted = []
    with tarfile.open(TARBALL, "r:gz") as tar:
        for member in tar:
            name = Path(member.name)
            if (member.isfile() and name.suffix == ".npy" and len(name.parts) == 3
                    and name.parts[0] == "audiocnn14embed512_features"
                    and not name.name.startswith("._")):
                tar.extract(member, tmp_path, filter="data")
                extracted.append(tmp_path / name)
                if len(extracted) == 5:
                    break
    assert len(extracted) == 5
    for path in extracted:
        raw = np.load(path)
        feature, weight = load_audio_feature(path)
        assert raw.shape == (512,) and raw.dtype == np.float32  # one embedding per video
        assert weight == 1.0 and np.array_equal(feature.numpy(), raw)
        assert path.parent.name in path.stem  # <Class>/v_<Class>_gXX_cYY.npy
