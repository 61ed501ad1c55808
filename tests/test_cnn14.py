"""CNN14 audio teacher (SPEC §8): mel bank, log-mel front end, network, checkpoint
loading and the feature extraction script, each against an oracle written here."""
import math
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.cnn14 import (CheckpointError, PannsCnn, load_official_checkpoint,
                          load_official_state_dict)
from models.logmel import LogMelFrontEnd, mel_filterbank
from util_scripts.extract_audio_features import WavInfo, main, plan_batches

SR, N_FFT, HOP, N_MELS, FMIN, FMAX = 32000, 1024, 320, 64, 50.0, 14000.0
CHANNELS = [64, 128, 256, 512, 1024, 2048]


# ---------------------------------------------------------------- oracles

def slaney_mel(hz: float) -> float:
    """Slaney mel scale: hz / (200/3) below 1 kHz, 15 + ln(hz/1000) / (ln 6.4 / 27) above."""
    if hz < 1000:
        return hz / (200 / 3)
    return 15 + math.log(hz / 1000) / (math.log(6.4) / 27)


def slaney_hz(mel: float) -> float:
    if mel < 15:
        return mel * 200 / 3
    return 1000 * math.exp((mel - 15) * math.log(6.4) / 27)


def naive_mel_bank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_fft//2+1, n_mels) triangles between Slaney-spaced edges, area-normalized; loops."""
    lo, hi = slaney_mel(fmin), slaney_mel(fmax)
    edges = [slaney_hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    bank = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        left, center, right = edges[m:m + 3]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if left < f < right:
                rise = (f - left) / (center - left)
                fall = (right - f) / (right - center)
                bank[k, m] = min(rise, fall) * 2 / (right - left)
    return bank


def naive_logmel(x: np.ndarray, bank: np.ndarray, n_fft: int = N_FFT,
                 hop: int = HOP) -> np.ndarray:
    """(N,) waveform → (1 + N // hop, n_mels) dB: reflect-padded Hann frames, rfft, power."""
    padded = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([padded[t * hop:t * hop + n_fft] for t in range(1 + len(x) // hop)])
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    return 10 * np.log10(np.maximum(power @ bank, 1e-10))


def naive_cnn14(logmel: torch.Tensor, sd: dict[str, torch.Tensor], n_blocks: int = 6,
                pooled_blocks: int = 5) -> dict[str, torch.Tensor]:
    """A PANNs CNN in eval mode (Cnn14_emb512 by default), written out in float64 from the
    official keys: `n_blocks` conv blocks, the first `pooled_blocks` followed by 2×2
    average pooling.

    logmel: (B, 1, T, 64) dB. BatchNorm, pooling and the pooling over time are spelled
    out instead of using the layers the model uses.
    """
    def p(name):
        return sd[name].double()

    def bn(x, prefix, axis):
        shape = [1] * x.dim()
        shape[axis] = -1
        scale = p(f"{prefix}.weight") / torch.sqrt(p(f"{prefix}.running_var") + 1e-5)
        return ((x - p(f"{prefix}.running_mean").view(shape)) * scale.view(shape)
                + p(f"{prefix}.bias").view(shape))

    x = bn(logmel.double(), "bn0", axis=3)
    for k in range(1, n_blocks + 1):
        block = f"conv_block{k}"
        x = torch.relu(bn(F.conv2d(x, p(f"{block}.conv1.weight"), padding=1), f"{block}.bn1", 1))
        x = torch.relu(bn(F.conv2d(x, p(f"{block}.conv2.weight"), padding=1), f"{block}.bn2", 1))
        if k <= pooled_blocks:
            b, c, t, m = x.shape
            x = x[:, :, :t // 2 * 2, :m // 2 * 2].reshape(b, c, t // 2, 2, m // 2, 2).mean((3, 5))
    per_time = x.mean(dim=3)                                     # (B, C_last, T')
    pooled = torch.stack([per_time[:, :, i] for i in range(per_time.shape[2])]).amax(0) \
        + per_time.sum(2) / per_time.shape[2]
    embedding = torch.relu(pooled @ p("fc1.weight").T + p("fc1.bias"))
    clipwise = torch.sigmoid(embedding @ p("fc_audioset.weight").T + p("fc_audioset.bias"))
    return {"embedding": embedding, "clipwise_output": clipwise}


def official_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of PANNs' Cnn14_emb512 state dict with its shape (front-end extras too)."""
    shapes = {"spectrogram_extractor.stft.conv_real.weight": (513, 1, 1024),
              "spectrogram_extractor.stft.conv_imag.weight": (513, 1, 1024),
              "logmel_extractor.melW": (513, 64)}

    def bn(prefix, c):
        shapes.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,),
                       f"{prefix}.running_mean": (c,), f"{prefix}.running_var": (c,),
                       f"{prefix}.num_batches_tracked": ()})
    bn("bn0", 64)
    for k, (c_in, c_out) in enumerate(zip([1] + CHANNELS[:-1], CHANNELS), start=1):
        shapes[f"conv_block{k}.conv1.weight"] = (c_out, c_in, 3, 3)
        shapes[f"conv_block{k}.conv2.weight"] = (c_out, c_out, 3, 3)
        bn(f"conv_block{k}.bn1", c_out)
        bn(f"conv_block{k}.bn2", c_out)
    shapes.update({"fc1.weight": (512, 2048), "fc1.bias": (512,),
                   "fc_audioset.weight": (527, 512), "fc_audioset.bias": (527,)})
    return shapes


FRONT_END_KEYS = {"spectrogram_extractor.stft.conv_real.weight",
                  "spectrogram_extractor.stft.conv_imag.weight", "logmel_extractor.melW"}


def random_official_weights(shapes: dict[str, tuple[int, ...]], g: torch.Generator) -> dict[str, torch.Tensor]:
    """Random weights for official `shapes`, scaled to keep activations O(1)."""
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            value = torch.tensor(1000)
        elif key.endswith("running_var"):
            value = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(("running_mean", "bias")):
            value = 0.1 * torch.randn(shape, generator=g)
        elif key.startswith("bn") or ".bn" in key:
            value = torch.rand(shape, generator=g) + 0.5
        else:
            value = torch.randn(shape, generator=g) * math.sqrt(2 / math.prod(shape[1:]))
        state[key] = value
    return state


@pytest.fixture(scope="module")
def official_state() -> dict[str, torch.Tensor]:
    """Random weights under the official names."""
    g = torch.Generator().manual_seed(0)
    state = random_official_weights(official_shapes(), g)
    # bn0 sees dB values of quiet noise (about -60 dB), not unit-scale inputs.
    state["bn0.running_mean"] = -60 + 5 * torch.randn(64, generator=g)
    state["bn0.running_var"] = 50 + 10 * torch.rand(64, generator=g)
    state["logmel_extractor.melW"] = torch.from_numpy(
        naive_mel_bank(SR, N_FFT, N_MELS, FMIN, FMAX)).float()
    return state


@pytest.fixture(scope="module")
def checkpoint_file(official_state, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "Cnn14_emb512_mAP=0.420.pth"
    torch.save({"model": official_state, "iteration": 0}, path)
    return path


@pytest.fixture(scope="module")
def loaded_model(official_state) -> PannsCnn:
    model = PannsCnn("Cnn14_emb512").eval()
    load_official_state_dict(model, official_state)
    return model


# ---------------------------------------------------------------- mel filter bank

# librosa.filters.mel(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000).T, worked out
# from librosa's formulas in 40-digit arithmetic (mpmath): {(fft bin, mel bin): weight}.
# Printed by `python tests/fixtures/librosa_mel_weights.py`.
LIBROSA_WEIGHTS = {(2, 0): 0.00428908945919, (3, 0): 0.0150118131072,
                   (4, 0): 0.0113128467819, (5, 0): 0.000590123133911,
                   (4, 1): 0.00721084498663, (5, 1): 0.0179335686346,
                   (6, 1): 0.00839109125446, (64, 30): 0.000395802171171,
                   (67, 30): 0.00738418472816, (71, 30): 0.000767091493677,
                   (401, 63): 1.21977150375e-5, (424, 63): 0.00134121208392,
                   (447, 63): 5.58838368298e-5}
LIBROSA_NONZERO = {0: range(2, 6), 1: range(4, 7), 30: range(64, 72), 63: range(401, 448)}


def test_mel_filterbank_matches_loop_derivation():
    ours = mel_filterbank(SR, N_FFT, N_MELS, FMIN, FMAX)
    assert ours.shape == (513, 64) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), naive_mel_bank(SR, N_FFT, N_MELS, FMIN, FMAX),
                               rtol=1e-6, atol=1e-10)


def test_mel_filterbank_known_librosa_values():
    ours = mel_filterbank(SR, N_FFT, N_MELS, FMIN, FMAX).double().numpy()
    for (k, m), value in LIBROSA_WEIGHTS.items():
        assert ours[k, m] == pytest.approx(value, rel=1e-5), (k, m)
    for m, bins in LIBROSA_NONZERO.items():
        assert set(np.flatnonzero(ours[:, m] > 1e-12)) == set(bins), m


def test_mel_filterbank_other_settings():
    ours = mel_filterbank(16000, 512, 40, 0.0, 8000.0)
    np.testing.assert_allclose(ours.numpy(), naive_mel_bank(16000, 512, 40, 0.0, 8000.0),
                               rtol=1e-6, atol=1e-10)


# ---------------------------------------------------------------- front end

def test_logmel_random_waveform_matches_numpy():
    x = np.random.default_rng(0).normal(scale=0.1, size=(2, 10000)).astype(np.float32)
    front = LogMelFrontEnd()
    out = front(torch.from_numpy(x))
    assert out.shape == (2, 1, 1 + 10000 // HOP, 64)
    bank = naive_mel_bank(SR, N_FFT, N_MELS, FMIN, FMAX)
    for b in range(2):
        np.testing.assert_allclose(out[b, 0].numpy(), naive_logmel(x[b], bank), atol=2e-3)


def test_logmel_sine_has_analytic_peak():
    """A cosine at FFT bin 160 (5 kHz) puts power (256A)² in bin 160 and (128A)² in bins
    159 and 161 of every interior frame (periodic Hann), hence in the mel bin whose center
    is nearest 5 kHz."""
    amplitude, fft_bin = 0.5, 160
    t = np.arange(SR)
    x = amplitude * np.cos(2 * np.pi * fft_bin * t / N_FFT + 0.3)
    out = LogMelFrontEnd()(torch.tensor(x[None], dtype=torch.float32))[0, 0].double().numpy()
    bank = naive_mel_bank(SR, N_FFT, N_MELS, FMIN, FMAX)
    lo, hi = slaney_mel(FMIN), slaney_mel(FMAX)
    centers = [slaney_hz(lo + (hi - lo) * (m + 1) / (N_MELS + 1)) for m in range(N_MELS)]
    nearest = int(np.argmin([abs(c - fft_bin * SR / N_FFT) for c in centers]))
    power = ((256 * amplitude) ** 2 * bank[fft_bin]
             + (128 * amplitude) ** 2 * (bank[fft_bin - 1] + bank[fft_bin + 1]))
    for frame in (10, 50, 90):
        assert int(np.argmax(out[frame])) == nearest
        assert out[frame, nearest] == pytest.approx(10 * math.log10(power[nearest]), abs=1e-3)
    np.testing.assert_allclose(out, naive_logmel(x, bank), atol=5e-2)


def test_logmel_buffers_are_not_saved():
    assert LogMelFrontEnd().state_dict() == {}
    assert tuple(LogMelFrontEnd().melW.shape) == (513, 64)


# ---------------------------------------------------------------- network + checkpoint

def test_checkpoint_loads_every_official_tensor(checkpoint_file, official_state):
    model = PannsCnn("Cnn14_emb512")
    load_official_checkpoint(model, checkpoint_file)
    ours = model.state_dict()
    assert set(ours) == set(official_state) - FRONT_END_KEYS
    for key, value in ours.items():
        assert torch.equal(value, official_state[key]), key


def test_missing_checkpoint_names_file_and_fix(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="zenodo record 3987831") as info:
        load_official_checkpoint(PannsCnn("Cnn14_emb512"), path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("content", [{"state_dict": {}}, {"model": {"fc1.weight": 3}}])
def test_checkpoint_without_model_entry(tmp_path, content):
    path = tmp_path / "other.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match="no 'model' state dict"):
        load_official_checkpoint(PannsCnn("Cnn14_emb512"), path)


@pytest.mark.parametrize("change, expected", [
    ("shape", r"wrong shape: fc1\.weight \(512, 1024\) != \(512, 2048\)"),
    ("missing", r"missing: conv_block3\.bn2\.running_var"),
    ("unexpected", r"unexpected: head\.weight"),
    ("melW", r"logmel_extractor\.melW differs"),
])
def test_checkpoint_mismatch_is_reported(official_state, loaded_model, change, expected):
    state = dict(official_state)
    if change == "shape":
        state["fc1.weight"] = torch.zeros(512, 1024)
    elif change == "missing":
        del state["conv_block3.bn2.running_var"]
    elif change == "unexpected":
        state["head.weight"] = torch.zeros(3)
    else:
        state["logmel_extractor.melW"] = state["logmel_extractor.melW"] * 1.01
    with pytest.raises(CheckpointError, match=expected) as info:
        load_official_state_dict(loaded_model, state, "ckpt.pth")
    assert str(info.value).startswith("ckpt.pth") and "\n" not in str(info.value)


def test_num_batches_tracked_may_be_absent(official_state):
    state = {k: v for k, v in official_state.items() if not k.endswith("num_batches_tracked")}
    model = PannsCnn("Cnn14_emb512")
    load_official_state_dict(model, state)
    assert torch.equal(model.fc1.weight, official_state["fc1.weight"])


def test_forward_matches_functional_oracle(official_state, loaded_model):
    x = np.random.default_rng(1).normal(scale=0.05, size=(2, SR)).astype(np.float32)
    x[1] += 0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR).astype(np.float32)
    bank = naive_mel_bank(SR, N_FFT, N_MELS, FMIN, FMAX)
    logmel = torch.from_numpy(np.stack([naive_logmel(w, bank) for w in x]))[:, None]
    expected = naive_cnn14(logmel, official_state)
    with torch.no_grad():
        out = loaded_model(torch.from_numpy(x))
    assert out["embedding"].shape == (2, 512) and out["clipwise_output"].shape == (2, 527)
    assert expected["embedding"].abs().max() > 0.1
    for key in ("embedding", "clipwise_output"):
        scale = expected[key].abs().max().item()
        torch.testing.assert_close(out[key].double(), expected[key], rtol=1e-4,
                                   atol=1e-4 * scale)


def test_forward_rejects_too_short_audio(loaded_model):
    with pytest.raises(ValueError, match="at least 9920"):
        loaded_model(torch.zeros(1, 9919))


# ---------------------------------------------------------------- extraction script

def write_wav(path: Path, samples: np.ndarray, rate: int = SR) -> None:
    """samples: int16 (N,) or (N, channels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = samples.reshape(len(samples), -1)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(frames.shape[1])
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(frames.astype("<i2").tobytes())


def assert_same_embedding(got: np.ndarray, want: np.ndarray) -> None:
    """Equal up to fp32 rounding of the network. The script runs files in batches, the
    reference one at a time, so the convolutions may take other kernels: each entry then
    differs by about 1e-6 of the embedding's largest entry (its error comes from sums of
    terms that large), which a small entry's relative tolerance alone does not cover."""
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_plan_batches_groups_equal_lengths():
    files = [WavInfo(Path(f"{i}.wav"), n) for i, n in enumerate([5, 7, 5, 5, 7, 9])]
    batches = plan_batches(files, batch_size=2)
    assert sorted(f.relative.name for b in batches for f in b) == sorted(
        f.relative.name for f in files)
    for batch in batches:
        assert 1 <= len(batch) <= 2 and len({f.num_samples for f in batch}) == 1
    assert len(batches) == 4


def test_extract_script_end_to_end(tmp_path, checkpoint_file, loaded_model, capsys):
    rng = np.random.default_rng(2)
    clips = {"a/x1": rng.integers(-3000, 3000, SR), "a/x2": rng.integers(-3000, 3000, SR),
             "b/y1": rng.integers(-3000, 3000, (int(0.7 * SR), 2)),
             "b/short": rng.integers(-3000, 3000, 5000)}
    for name, samples in clips.items():
        write_wav(tmp_path / "wav" / f"{name}.wav", samples)
    args = ["--wav_path", str(tmp_path / "wav"), "--dst_path", str(tmp_path / "feat"),
            "--checkpoint", str(checkpoint_file), "--batch_size", "4", "--device", "cpu"]
    assert main(args) == 0
    assert "3 features written, 0 already there, 1 files too short" in capsys.readouterr().err
    assert not (tmp_path / "feat" / "b" / "short.npy").exists()
    for name in ("a/x1", "a/x2", "b/y1"):
        feature = np.load(tmp_path / "feat" / f"{name}.npy")
        assert feature.shape == (512,) and feature.dtype == np.float32
        mono = clips[name].reshape(len(clips[name]), -1).mean(axis=1) / 32768
        with torch.no_grad():
            direct = loaded_model(torch.tensor(mono[None], dtype=torch.float32))["embedding"]
        assert_same_embedding(feature, direct[0].numpy())
    assert main(args) == 0
    assert "0 features written, 3 already there" in capsys.readouterr().err


def test_extract_script_user_errors(tmp_path, capsys):
    write_wav(tmp_path / "wav" / "a" / "x.wav", np.zeros(SR, np.int16), rate=44100)
    args = ["--wav_path", str(tmp_path / "wav"), "--dst_path", str(tmp_path / "feat"),
            "--checkpoint", str(tmp_path / "missing.pth"), "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "x.wav: 44100 Hz" in err and err.count("\n") == 1
    write_wav(tmp_path / "wav" / "a" / "x.wav", np.zeros(SR, np.int16))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "missing.pth does not exist" in err and "zenodo" in err and err.count("\n") == 1
    (tmp_path / "missing.pth").mkdir()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "missing.pth is a folder, not a file: pass the Cnn14_emb512_mAP=0.420.pth file" in err
    assert err.count("\n") == 1
    (tmp_path / "missing.pth").rmdir()
    assert main(args[:1] + [str(tmp_path / "nowhere")] + args[2:]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_extract_script_max_seconds_uses_the_start(tmp_path, checkpoint_file, loaded_model):
    samples = np.random.default_rng(3).integers(-3000, 3000, 2 * SR)
    write_wav(tmp_path / "wav" / "a" / "x.wav", samples)
    assert main(["--wav_path", str(tmp_path / "wav"), "--dst_path", str(tmp_path / "feat"),
                 "--checkpoint", str(checkpoint_file), "--max_seconds", "0.75",
                 "--device", "cpu"]) == 0
    with torch.no_grad():
        direct = loaded_model(torch.tensor(samples[None, :24000] / 32768,
                                           dtype=torch.float32))["embedding"]
    assert_same_embedding(np.load(tmp_path / "feat" / "a" / "x.npy"), direct[0].numpy())
