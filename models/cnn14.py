"""PANNs CNN audio taggers (SPEC §8): the audio teachers that make the audio features.

`PannsCnn(name)` builds one member of the family in `PANNS_MODELS` (`Cnn14_emb512`, the
network of the released UCF features, is the default). Parameter names are those of the
PANNs release, so its official AudioSet checkpoints load through `load_official_checkpoint`.
Training-only augmentations of PANNs (SpecAugment, mixup) are left out: this module
extracts features.
"""
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from errors import UserError, require_file
from models.checkpoint_file import CheckpointFileError, read_checkpoint_file
from models.logmel import LogMelFrontEnd

AUDIOSET_CLASSES = 527
N_MELS, FMIN = 64, 50.0
CNN14_CHANNELS = (64, 128, 256, 512, 1024, 2048)
CNN10_CHANNELS = (64, 128, 256, 512)


@dataclass(frozen=True)
class PannsSpec:
    """Facts of one PANNs network (PANNs `pytorch/models.py` and its published checkpoints).

    channels: widths of the conv blocks; the first `pooled_blocks` end in 2×2 average
    pooling, the others in 1×1 (none). embedding_dim: outputs of fc1, the embedding.
    The front end: mono audio at `sample_rate`, Hann window and FFT of `n_fft` samples,
    hop `hop_length`, 64 mel bins from 50 Hz to `fmax`.
    """
    name: str
    checkpoint: str
    channels: tuple[int, ...]
    pooled_blocks: int
    embedding_dim: int
    sample_rate: int = 32000
    n_fft: int = 1024
    hop_length: int = 320
    fmax: float = 14000.0

    @property
    def checkpoint_hint(self) -> str:
        return (f"download {self.checkpoint} from the PANNs release (zenodo record 3987831) "
                f"and pass --checkpoint")


PANNS_MODELS = {spec.name: spec for spec in (
    PannsSpec("Cnn14_emb512", "Cnn14_emb512_mAP=0.420.pth", CNN14_CHANNELS, 5, 512),
    PannsSpec("Cnn14", "Cnn14_mAP=0.431.pth", CNN14_CHANNELS, 5, 2048),
    PannsSpec("Cnn14_emb128", "Cnn14_emb128_mAP=0.412.pth", CNN14_CHANNELS, 5, 128),
    PannsSpec("Cnn14_emb32", "Cnn14_emb32_mAP=0.364.pth", CNN14_CHANNELS, 5, 32),
    PannsSpec("Cnn14_16k", "Cnn14_16k_mAP=0.438.pth", CNN14_CHANNELS, 5, 2048,
              sample_rate=16000, n_fft=512, hop_length=160, fmax=8000.0),
    PannsSpec("Cnn14_8k", "Cnn14_8k_mAP=0.416.pth", CNN14_CHANNELS, 5, 2048,
              sample_rate=8000, n_fft=256, hop_length=80, fmax=4000.0),
    PannsSpec("Cnn10", "Cnn10_mAP=0.380.pth", CNN10_CHANNELS, 4, 512),
)}
DEFAULT_MODEL = "Cnn14_emb512"

# Front-end tensors stored in the official checkpoints: torchlibrosa's STFT kernels
# (replaced here by torch.stft; only their shapes are checked) and the mel matrix melW
# (compared with ours).
_STFT_KEYS = ("spectrogram_extractor.stft.conv_real.weight",
              "spectrogram_extractor.stft.conv_imag.weight")
_MEL_KEY = "logmel_extractor.melW"
_STFT_PREFIX = "spectrogram_extractor."


class CheckpointError(UserError):
    """The checkpoint file cannot be used for the requested PANNs network."""


class ConvBlock(nn.Module):
    """Two 3×3 conv (no bias) + BatchNorm + ReLU layers, then average pooling (PANNs)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        nn.init.xavier_uniform_(self.conv1.weight)
        nn.init.xavier_uniform_(self.conv2.weight)

    def forward(self, x: Tensor, pool_size: tuple[int, int]) -> Tensor:
        """x (B, C_in, T, M) → (B, C_out, T // p_t, M // p_m)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool_size)


class PannsCnn(nn.Module):
    """A PANNs CNN (`Cnn14_emb512`, `Cnn14`, `Cnn10`, ...) on mono waveforms (SPEC §8)."""

    def __init__(self, name: str = DEFAULT_MODEL):
        super().__init__()
        if name not in PANNS_MODELS:
            raise ValueError(f"unknown PANNs model {name!r}; known: {', '.join(PANNS_MODELS)}")
        self.spec = spec = PANNS_MODELS[name]
        self.frontend = LogMelFrontEnd(spec.sample_rate, spec.n_fft, spec.hop_length, N_MELS,
                                       FMIN, spec.fmax)
        self.bn0 = nn.BatchNorm2d(N_MELS)
        for k, (c_in, c_out) in enumerate(zip((1,) + spec.channels[:-1], spec.channels),
                                          start=1):
            setattr(self, f"conv_block{k}", ConvBlock(c_in, c_out))
        self.fc1 = nn.Linear(spec.channels[-1], spec.embedding_dim)
        self.fc_audioset = nn.Linear(spec.embedding_dim, AUDIOSET_CLASSES)
        for fc in (self.fc1, self.fc_audioset):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    @property
    def embedding_dim(self) -> int:
        return self.spec.embedding_dim

    @property
    def min_samples(self) -> int:
        """Shortest waveform the network accepts: k 2× time poolings need 2**k frames."""
        return (2 ** self.spec.pooled_blocks - 1) * self.frontend.hop_length

    def forward(self, waveform: Tensor) -> dict[str, Tensor]:
        """waveform (B, N) float at `spec.sample_rate`, N >= `min_samples` →
        {"embedding": (B, D), "clipwise_output": (B, 527) AudioSet probabilities},
        D = `spec.embedding_dim`.

        The embedding is relu(fc1(max_t + mean_t)) of the last conv map averaged over the
        mel axis (SPEC §8). It depends on N, so zero-padded batches of unequal clips do not
        give the per-clip embeddings.
        """
        if waveform.dim() == 2 and waveform.shape[1] < self.min_samples:
            raise ValueError(f"waveform has {waveform.shape[1]} samples, {self.spec.name} "
                             f"needs at least {self.min_samples}")
        x = self.frontend(waveform)                                  # (B, 1, T, 64)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)              # normalize per mel bin
        for k in range(1, len(self.spec.channels) + 1):
            pool = (2, 2) if k <= self.spec.pooled_blocks else (1, 1)
            x = getattr(self, f"conv_block{k}")(x, pool)
            x = F.dropout(x, p=0.2, training=self.training)
        x = x.mean(dim=3)                                            # (B, C_last, T')
        x = x.max(dim=2).values + x.mean(dim=2)                      # (B, C_last)
        x = F.dropout(x, p=0.5, training=self.training)
        x = F.relu(self.fc1(x))
        # As in PANNs: dropout on the returned embedding only, not on the classifier input.
        embedding = F.dropout(x, p=0.5, training=self.training)
        return {"embedding": embedding, "clipwise_output": torch.sigmoid(self.fc_audioset(x))}


def read_official_state_dict(path: str | Path, spec: PannsSpec) -> dict[str, Tensor]:
    """The `model` state dict of a PANNs checkpoint file, read without running its code
    (`models.checkpoint_file`). Official files are `torch.save({"iteration": int, "model":
    state_dict, "sampler": ...})`, the sampler's state numeric NumPy arrays, which that
    reader rebuilds; an object array or any other class is refused.

    Raises MissingFileError / UserError (a folder) / CheckpointError with a one-line message
    naming `path`.
    """
    path = Path(path)
    require_file(path, f"{spec.name} checkpoint", f"the {spec.checkpoint} file", fix=f": {spec.checkpoint_hint}")
    try:
        checkpoint = read_checkpoint_file(path, "--checkpoint")
    except CheckpointFileError as e:
        raise CheckpointError(f"{e}; {spec.checkpoint_hint}") from None
    state = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} has no 'model' state dict: {spec.checkpoint_hint}")
    return state


def _front_end_shapes(model: PannsCnn) -> dict[str, tuple[int, ...]]:
    """Official front-end keys → their shapes for `model`; they may be absent from a file."""
    bins, n_fft = model.spec.n_fft // 2 + 1, model.spec.n_fft
    return {_STFT_KEYS[0]: (bins, 1, n_fft), _STFT_KEYS[1]: (bins, 1, n_fft),
            _MEL_KEY: tuple(model.frontend.melW.shape)}


def load_official_state_dict(model: PannsCnn, state: dict[str, Tensor],
                             source: str | Path = "checkpoint") -> None:
    """Copy the official `state` of `model.spec.name` into `model`, checking names, shapes
    and melW.

    Every checkpoint key must map to a model key or be a known front-end tensor (other
    torchlibrosa STFT internals are ignored); every model key must be present (BatchNorm
    `num_batches_tracked`, unused at inference, may be absent). A state dict of another
    member of the family is named in the error. Raises CheckpointError naming `source`.
    """
    # The network's keys are the official ones by construction; the front end has no
    # persistent state.
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    extras = _front_end_shapes(model)
    expected = {**ours, **extras}
    unexpected = [k for k in state if k not in expected and not k.startswith(_STFT_PREFIX)]
    missing = [c for c in ours
               if c not in state and not c.endswith("num_batches_tracked")]
    wrong_shape = [f"{c} {tuple(state[c].shape)} != {shape}"
                   for c, shape in expected.items() if c in state
                   and tuple(state[c].shape) != shape]
    problems = [(label, keys) for label, keys in (("missing", missing),
                                                  ("unexpected", unexpected),
                                                  ("wrong shape", wrong_shape)) if keys]
    if problems:
        detail = "; ".join(f"{label}: {', '.join(keys[:4])}"
                           + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
                           for label, keys in problems)
        others = [name for name in identify_state_dict(state) if name != model.spec.name]
        if others:
            raise CheckpointError(f"{source} looks like a {' or '.join(others)} checkpoint, "
                                  f"not {model.spec.name} ({detail}): run with --model "
                                  f"{others[0]}, or pass {model.spec.checkpoint}")
        raise CheckpointError(f"{source} is not a {model.spec.name} checkpoint ({detail}): "
                              f"{model.spec.checkpoint_hint}")
    if _MEL_KEY in state:
        _check_mel(model.frontend.melW, state[_MEL_KEY], source)
    params = model.state_dict()
    with torch.no_grad():
        for k in ours:
            if k in state:
                params[k].copy_(state[k])


def identify_state_dict(state: dict[str, Tensor]) -> list[str]:
    """Names of the `PANNS_MODELS` whose network `state` seems to be.

    Read off the conv block widths, the embedding size (fc1) and, when the file has its
    mel matrix, the FFT size; without melW, Cnn14, Cnn14_16k and Cnn14_8k look alike.
    """
    channels = []
    for k in count(1):
        weight = state.get(f"conv_block{k}.conv1.weight")
        if weight is None:
            break
        channels.append(weight.shape[0])
    fc1 = state.get("fc1.weight")
    mel = state.get(_MEL_KEY)
    return [spec.name for spec in PANNS_MODELS.values()
            if tuple(channels) == spec.channels and fc1 is not None
            and fc1.dim() == 2 and fc1.shape[0] == spec.embedding_dim
            and (mel is None or mel.shape[0] == spec.n_fft // 2 + 1)]


def load_official_checkpoint(model: PannsCnn, path: str | Path) -> None:
    """Load an official PANNs checkpoint of `model.spec.name` (e.g. `Cnn14_mAP=0.431.pth`)."""
    load_official_state_dict(model, read_official_state_dict(path, model.spec), path)


def _check_mel(ours: Tensor, theirs: Tensor, source: str | Path) -> None:
    """Our mel bank must be the one the network was trained with (SPEC §8)."""
    theirs = theirs.to(ours)
    if not torch.allclose(theirs, ours, rtol=1e-4, atol=1e-7):
        diff = (theirs - ours).abs().max().item()
        raise CheckpointError(f"{source}: {_MEL_KEY} differs from our mel filter "
                              f"bank (max abs difference {diff:.3g}); the checkpoint was made "
                              f"with another front end")
