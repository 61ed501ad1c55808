"""The PANNs family of audio teachers (SPEC §8): official key names and shapes of each
network, the 16 kHz front end, the embedding size, a checkpoint of one network given for
another, and checkpoint files read without running their code (issue: safe loading).

The facts below are read off PANNs' `pytorch/models.py` and the front-end arguments its
published checkpoints were trained with; they are written here independently of
`models/cnn14.py`.
"""
import math
import os
import pickle
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from models.cnn14 import (CheckpointError, PannsCnn, identify_state_dict,
                          load_official_state_dict, read_official_state_dict)
from models.logmel import LogMelFrontEnd
from tests.test_cnn14 import naive_cnn14, naive_logmel, naive_mel_bank, random_official_weights, write_wav
from util_scripts.extract_audio_features import main

CNN14_BLOCKS = (64, 128, 256, 512, 1024, 2048)
FRONT_32K = (32000, 1024, 320, 64, 50.0, 14000.0)   # sample rate, n_fft = window, hop,
FRONT_16K = (16000, 512, 160, 64, 50.0, 8000.0)     # mel bins, fmin, fmax
FRONT_8K = (8000, 256, 80, 64, 50.0, 4000.0)
# name: (conv block widths, blocks followed by 2×2 average pooling, fc1 outputs, front end)
FACTS = {
    "Cnn14_emb512": (CNN14_BLOCKS, 5, 512, FRONT_32K),
    "Cnn14": (CNN14_BLOCKS, 5, 2048, FRONT_32K),
    "Cnn14_emb128": (CNN14_BLOCKS, 5, 128, FRONT_32K),
    "Cnn14_emb32": (CNN14_BLOCKS, 5, 32, FRONT_32K),
    "Cnn14_16k": (CNN14_BLOCKS, 5, 2048, FRONT_16K),
    "Cnn14_8k": (CNN14_BLOCKS, 5, 2048, FRONT_8K),
    "Cnn10": ((64, 128, 256, 512), 4, 512, FRONT_32K),
}
FRONT_END_KEYS = {"spectrogram_extractor.stft.conv_real.weight",
                  "spectrogram_extractor.stft.conv_imag.weight", "logmel_extractor.melW"}


def official_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Every key of the official state dict of `name`, with its shape (front end too)."""
    blocks, _, embedding, (_, n_fft, _, n_mels, _, _) = FACTS[name]
    bins = n_fft // 2 + 1
    shapes = {"spectrogram_extractor.stft.conv_real.weight": (bins, 1, n_fft),
              "spectrogram_extractor.stft.conv_imag.weight": (bins, 1, n_fft),
              "logmel_extractor.melW": (bins, n_mels)}

    def bn(prefix, c):
        shapes.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,),
                       f"{prefix}.running_mean": (c,), f"{prefix}.running_var": (c,),
                       f"{prefix}.num_batches_tracked": ()})
    bn("bn0", n_mels)
    for k, (c_in, c_out) in enumerate(zip((1,) + blocks[:-1], blocks), start=1):
        shapes[f"conv_block{k}.conv1.weight"] = (c_out, c_in, 3, 3)
        shapes[f"conv_block{k}.conv2.weight"] = (c_out, c_out, 3, 3)
        bn(f"conv_block{k}.bn1", c_out)
        bn(f"conv_block{k}.bn2", c_out)
    shapes.update({"fc1.weight": (embedding, blocks[-1]), "fc1.bias": (embedding,),
                   "fc_audioset.weight": (527, embedding), "fc_audioset.bias": (527,)})
    return shapes


def official_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the official names of `name`, scaled to keep activations O(1),
    with the front end's true mel matrix."""
    g = torch.Generator().manual_seed(seed)
    state = random_official_weights(official_shapes(name), g)
    state["bn0.running_mean"] = -60 + 5 * torch.randn(64, generator=g)
    state["bn0.running_var"] = 50 + 10 * torch.rand(64, generator=g)
    sr, n_fft, _, n_mels, fmin, fmax = FACTS[name][3]
    state["logmel_extractor.melW"] = torch.from_numpy(
        naive_mel_bank(sr, n_fft, n_mels, fmin, fmax)).float()
    return state


def shapes_only(name: str) -> dict[str, torch.Tensor]:
    """The official keys of `name` as storage-free tensors: enough to test the checks."""
    return {k: torch.empty(shape, device="meta") for k, shape in official_shapes(name).items()}


def min_samples(name: str) -> int:
    """Fewest samples whose frames (1 + N // hop) survive the 2× time poolings."""
    _, pooled, _, (_, _, hop, _, _, _) = FACTS[name]
    n = 1
    while (1 + n // hop) // 2 ** pooled < 1:
        n += 1
    return n


# ---------------------------------------------------------------- each network

@pytest.mark.parametrize("name", list(FACTS))
def test_official_state_dict_loads_strictly_and_embeds_to_d(name):
    state = official_state(name)
    model = PannsCnn(name).eval()
    load_official_state_dict(model, state, f"{name}.pth")
    ours = model.state_dict()
    assert set(ours) == set(state) - FRONT_END_KEYS
    for key, value in ours.items():
        assert torch.equal(value, state[key]), key
    sr, n_fft, hop, n_mels, fmin, fmax = FACTS[name][3]
    front = model.frontend
    assert (front.sample_rate, front.n_fft, front.hop_length) == (sr, n_fft, hop)
    np.testing.assert_allclose(front.melW.numpy(), naive_mel_bank(sr, n_fft, n_mels, fmin, fmax),
                               rtol=1e-6, atol=1e-10)
    blocks, pooled, dim, _ = FACTS[name]
    n = min_samples(name)
    assert model.embedding_dim == dim and model.min_samples == n
    x = 0.1 * torch.randn(2, n, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
    assert out["embedding"].shape == (2, dim) and out["clipwise_output"].shape == (2, 527)
    # The shortest input, against the functional oracle of its front end and blocks.
    bank = naive_mel_bank(sr, n_fft, n_mels, fmin, fmax)
    logmel = torch.from_numpy(np.stack([naive_logmel(w, bank, n_fft, hop) for w in x.numpy()]))[:, None]
    expected = naive_cnn14(logmel, state, n_blocks=len(blocks), pooled_blocks=pooled)
    assert expected["embedding"].abs().max() > 0.1
    for key in ("embedding", "clipwise_output"):
        scale = expected[key].abs().max().item()
        torch.testing.assert_close(out[key].double(), expected[key], rtol=1e-4, atol=1e-4 * scale)
    with pytest.raises(ValueError, match=f"at least {n}"):
        model(x[:, :-1])


def test_cnn10_forward_matches_functional_oracle():
    """Cnn10 pools after every one of its four blocks, unlike Cnn14's unpooled sixth."""
    state = official_state("Cnn10", seed=3)
    model = PannsCnn("Cnn10").eval()
    load_official_state_dict(model, state)
    x = np.random.default_rng(4).normal(scale=0.05, size=(2, 32000)).astype(np.float32)
    x[1] += 0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 32000).astype(np.float32)
    bank = naive_mel_bank(32000, 1024, 64, 50.0, 14000.0)
    logmel = torch.from_numpy(np.stack([naive_logmel(w, bank) for w in x]))[:, None]
    expected = naive_cnn14(logmel, state, n_blocks=4, pooled_blocks=4)
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    assert expected["embedding"].abs().max() > 0.1
    for key in ("embedding", "clipwise_output"):
        scale = expected[key].abs().max().item()
        torch.testing.assert_close(out[key].double(), expected[key], rtol=1e-4,
                                   atol=1e-4 * scale)


# ---------------------------------------------------------------- 16 kHz front end

def test_front_end_16k_matches_numpy():
    sr, n_fft, hop, n_mels, fmin, fmax = FRONT_16K
    front = PannsCnn("Cnn14_16k").frontend
    x = np.random.default_rng(5).normal(scale=0.1, size=(2, 7000)).astype(np.float32)
    out = front(torch.from_numpy(x))
    assert out.shape == (2, 1, 1 + 7000 // hop, n_mels)
    bank = naive_mel_bank(sr, n_fft, n_mels, fmin, fmax)
    for b in range(2):
        np.testing.assert_allclose(out[b, 0].numpy(), naive_logmel(x[b], bank, n_fft, hop),
                                   atol=2e-3)


def test_front_end_16k_sine_has_analytic_peak():
    """A cosine at FFT bin k (of 512) puts power (128A)² in bin k and (64A)² in bins k ± 1
    of every interior frame (periodic Hann window summing to 256)."""
    sr, n_fft, hop, n_mels, fmin, fmax = FRONT_16K
    amplitude, fft_bin = 0.5, 100                                   # 3125 Hz
    x = amplitude * np.cos(2 * np.pi * fft_bin * np.arange(sr) / n_fft + 0.3)
    out = LogMelFrontEnd(sr, n_fft, hop, n_mels, fmin, fmax)(
        torch.tensor(x[None], dtype=torch.float32))[0, 0].double().numpy()
    bank = naive_mel_bank(sr, n_fft, n_mels, fmin, fmax)
    power = ((n_fft / 4 * amplitude) ** 2 * bank[fft_bin]
             + (n_fft / 8 * amplitude) ** 2 * (bank[fft_bin - 1] + bank[fft_bin + 1]))
    peak = int(np.argmax(power))
    for frame in (10, 50, 90):
        assert int(np.argmax(out[frame])) == peak
        assert out[frame, peak] == pytest.approx(10 * math.log10(power[peak]), abs=1e-3)


# ---------------------------------------------------------------- another network's file

@pytest.mark.parametrize("given, requested", [
    ("Cnn10", "Cnn14_emb512"), ("Cnn14_emb128", "Cnn14_emb512"), ("Cnn14", "Cnn14_16k"),
    ("Cnn14_16k", "Cnn14"), ("Cnn14_8k", "Cnn14_16k"), ("Cnn14_emb512", "Cnn10"),
])
def test_state_dict_of_another_model_is_named(given, requested):
    with pytest.raises(CheckpointError) as info:
        load_official_state_dict(PannsCnn(requested), shapes_only(given), "ckpt.pth")
    message = str(info.value)
    assert message.startswith(f"ckpt.pth looks like a {given} checkpoint, not {requested}")
    assert f"--model {given}" in message and "\n" not in message


def test_without_mel_matrix_the_sample_rate_cannot_be_told():
    state = {k: v for k, v in shapes_only("Cnn14_16k").items() if k not in FRONT_END_KEYS}
    assert identify_state_dict(state) == ["Cnn14", "Cnn14_16k", "Cnn14_8k"]
    assert identify_state_dict(shapes_only("Cnn14_16k")) == ["Cnn14_16k"]


def test_script_names_the_model_a_checkpoint_seems_to_be(tmp_path, capsys):
    path = tmp_path / "Cnn10_mAP=0.380.pth"
    torch.save({"iteration": 0, "model": official_state("Cnn10")}, path)
    write_wav(tmp_path / "wav" / "a" / "x.wav", np.zeros(32000, np.int16))
    code = main(["--wav_path", str(tmp_path / "wav"), "--dst_path", str(tmp_path / "feat"),
                 "--checkpoint", str(path), "--model", "Cnn14", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {path} looks like a Cnn10 checkpoint, not Cnn14")


# ---------------------------------------------------------------- official file format

NUMPY_RECONSTRUCT = np.zeros(0).__reduce__()[0]


class Numpy1Pickler(pickle._Pickler):
    """Pickles numpy arrays as numpy 1 did (`numpy.core.multiarray._reconstruct`), the
    numpy that wrote the published PANNs checkpoints."""

    def save_global(self, obj, name=None):
        if obj is NUMPY_RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


NUMPY1_PICKLE = types.ModuleType("numpy1_pickle")   # the pickle_module of torch.save
NUMPY1_PICKLE.Pickler = Numpy1Pickler
NUMPY1_PICKLE.dump = lambda obj, f, protocol: Numpy1Pickler(f, protocol).dump(obj)


def save_like_panns(path: Path, state: dict[str, torch.Tensor], legacy: bool) -> None:
    """What PANNs' pytorch/main.py saves: {'iteration', 'model': model.state_dict(),
    'sampler': BalancedTrainSampler.state_dict()}, the sampler holding numpy int64 arrays
    (utils/data_generator.py), in torch's zip or legacy container."""
    model = OrderedDict(state)
    model._metadata = OrderedDict({"": {"version": 1}})
    rng = np.random.default_rng(7)
    sampler = {"indexes_per_class": [rng.permutation(np.flatnonzero(rng.random(40) < 0.2))
                                     for _ in range(527)],
               "queue": rng.permutation(527).tolist()[:300],
               "pointers_of_classes": rng.integers(0, 5, 527).tolist()}
    torch.save({"iteration": 600000, "model": model, "sampler": sampler}, path,
               pickle_module=NUMPY1_PICKLE, _use_new_zipfile_serialization=not legacy)


def pickle_bytes(path: Path) -> bytes:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    return path.read_bytes()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_official_checkpoint_format_loads_without_pickle(tmp_path, legacy):
    path = tmp_path / "Cnn10_mAP=0.380.pth"
    state = official_state("Cnn10")
    save_like_panns(path, state, legacy)
    assert b"numpy.core.multiarray\n_reconstruct" in pickle_bytes(path)
    with pytest.raises(pickle.UnpicklingError, match="numpy.core.multiarray._reconstruct"):
        torch.load(path, weights_only=True)          # the numpy arrays need the allowlist
    loaded = read_official_state_dict(path, PannsCnn("Cnn10").spec)
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_extraction_from_official_checkpoint_format(tmp_path, capsys):
    path = tmp_path / "Cnn10_mAP=0.380.pth"
    state = official_state("Cnn10", seed=8)
    save_like_panns(path, state, legacy=False)
    samples = np.random.default_rng(9).integers(-3000, 3000, 20000)
    write_wav(tmp_path / "wav" / "a" / "x.wav", samples)
    assert main(["--wav_path", str(tmp_path / "wav"), "--dst_path", str(tmp_path / "feat"),
                 "--checkpoint", str(path), "--model", "Cnn10", "--device", "cpu"]) == 0
    assert "1 features written" in capsys.readouterr().err
    model = PannsCnn("Cnn10").eval()
    load_official_state_dict(model, state)
    with torch.no_grad():
        direct = model(torch.tensor(samples[None] / 32768, dtype=torch.float32))["embedding"]
    feature = np.load(tmp_path / "feat" / "a" / "x.npy")
    assert feature.shape == (512,) and feature.dtype == np.float32
    np.testing.assert_allclose(feature, direct[0].numpy(), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- files that run code

class Payload:
    """Unpickles by calling `function(*args)`: what a malicious checkpoint does."""

    def __init__(self, function, args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def malicious_checkpoint(path: Path, kind: str, target: Path) -> None:
    payload = (Payload(os.system, (f"touch '{target}'",)) if kind == "os.system"
               else Payload(exec, (f"open({str(target)!r}, 'w').close()",)))
    torch.save({"iteration": 0, "model": {"fc1.weight": torch.zeros(2)}, "sampler": payload},
               path)


@pytest.mark.parametrize("kind", ["os.system", "exec"])
def test_malicious_checkpoint_is_refused_and_never_run(tmp_path, capsys, kind):
    # Oracle: the payload is real; the unsafe loader creates its file.
    canary = tmp_path / "canary"
    malicious_checkpoint(tmp_path / "canary.pth", kind, canary)
    torch.load(tmp_path / "canary.pth", weights_only=False)
    assert canary.exists()

    target, path = tmp_path / "pwned", tmp_path / "Cnn10_mAP=0.380.pth"
    malicious_checkpoint(path, kind, target)
    write_wav(tmp_path / "wav" / "a" / "x.wav", np.zeros(32000, np.int16))
    code = main(["--wav_path", str(tmp_path / "wav"), "--dst_path", str(tmp_path / "feat"),
                 "--checkpoint", str(path), "--model", "Cnn10", "--device", "cpu"])
    err = capsys.readouterr().err
    assert not target.exists()
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: --checkpoint {path} was refused: unpickling it would call ")
    assert ("system" if kind == "os.system" else "exec") in err


def test_numpy_object_array_is_refused(tmp_path):
    path = tmp_path / "objects.pth"
    torch.save({"model": official_state("Cnn10"),
                "sampler": {"queue": np.array([1, "two"], dtype=object)}}, path)
    with pytest.raises(CheckpointError, match="was refused: unpickling it would") as info:
        read_official_state_dict(path, PannsCnn("Cnn10").spec)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b"", b"PK\x03\x04" + bytes(50)],
                         ids=["text", "empty", "broken-zip"])
def test_unreadable_checkpoint_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="is not a readable checkpoint") as info:
        read_official_state_dict(path, PannsCnn("Cnn10").spec)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert "Cnn10_mAP=0.380.pth" in str(info.value)


# ---------------------------------------------------------------- the script's inputs

@pytest.mark.parametrize("model, rate, needed", [("Cnn14_16k", 32000, 16000),
                                                 ("Cnn14", 16000, 32000)])
def test_wav_rate_must_be_the_models(tmp_path, capsys, model, rate, needed):
    write_wav(tmp_path / "wav" / "a" / "x.wav", np.zeros(rate, np.int16), rate=rate)
    code = main(["--wav_path", str(tmp_path / "wav"), "--dst_path", str(tmp_path / "feat"),
                 "--checkpoint", str(tmp_path / "unused.pth"), "--model", model,
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"x.wav: {rate} Hz, {model} needs {needed} Hz" in err and f"-ar {needed}" in err


def test_existing_features_of_another_size_are_an_error(tmp_path, capsys):
    for name in ("x", "y"):
        write_wav(tmp_path / "wav" / "a" / f"{name}.wav", np.zeros(32000, np.int16))
    (tmp_path / "feat" / "a").mkdir(parents=True)
    np.save(tmp_path / "feat" / "a" / "x.npy", np.zeros(2048, np.float32))
    code = main(["--wav_path", str(tmp_path / "wav"), "--dst_path", str(tmp_path / "feat"),
                 "--checkpoint", str(tmp_path / "unused.pth"), "--model", "Cnn10",
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert str(tmp_path / "feat" / "a" / "x.npy") in err
    assert "(2048,) float32" in err and "--model Cnn10 writes (512,) float32" in err
    assert not (tmp_path / "feat" / "a" / "y.npy").exists()
