"""PANNs `Cnn14_emb512` (SPEC §8): the audio teacher that makes the 512-d audio features.

Parameter names are those of the PANNs release, so the official AudioSet checkpoint
`Cnn14_emb512_mAP=0.420.pth` loads through `load_official_checkpoint`. Training-only
augmentations of PANNs (SpecAugment, mixup) are left out: this module extracts features.
"""
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.logmel import LogMelFrontEnd

CHANNELS = (64, 128, 256, 512, 1024, 2048)
EMBEDDING_DIM = 512
AUDIOSET_CLASSES = 527
CHECKPOINT_HINT = ("download Cnn14_emb512_mAP=0.420.pth from the PANNs release "
                   "(zenodo record 3987831) and pass --checkpoint")
# Front-end tensors stored in the official checkpoint: torchlibrosa's STFT kernels are
# replaced by torch.stft, its mel matrix is compared with ours.
_IGNORED_PREFIX = "spectrogram_extractor."
_CHECKPOINT_MEL_KEY = "logmel_extractor.melW"


class CheckpointError(ValueError):
    """The checkpoint file does not hold a Cnn14_emb512 state dict."""


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


class Cnn14Emb512(nn.Module):
    """CNN14 with a 512-d embedding layer, on 32 kHz mono waveforms (SPEC §8)."""

    def __init__(self):
        super().__init__()
        self.frontend = LogMelFrontEnd()
        self.bn0 = nn.BatchNorm2d(64)
        for k, (c_in, c_out) in enumerate(zip((1,) + CHANNELS[:-1], CHANNELS), start=1):
            setattr(self, f"conv_block{k}", ConvBlock(c_in, c_out))
        self.fc1 = nn.Linear(CHANNELS[-1], EMBEDDING_DIM)
        self.fc_audioset = nn.Linear(EMBEDDING_DIM, AUDIOSET_CLASSES)
        for fc in (self.fc1, self.fc_audioset):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    @property
    def min_samples(self) -> int:
        """Shortest waveform the network accepts: five 2× time poolings need 32 frames."""
        return 31 * self.frontend.hop_length

    def forward(self, waveform: Tensor) -> dict[str, Tensor]:
        """waveform (B, N) float at 32 kHz, N >= `min_samples` →
        {"embedding": (B, 512), "clipwise_output": (B, 527) AudioSet probabilities}.

        The embedding is max + mean over time of the last conv map (itself averaged over
        the mel axis), through fc1 and ReLU. It depends on N, so zero-padded batches of
        unequal clips do not give the per-clip embeddings.
        """
        if waveform.dim() == 2 and waveform.shape[1] < self.min_samples:
            raise ValueError(f"waveform has {waveform.shape[1]} samples, CNN14 needs at "
                             f"least {self.min_samples}")
        x = self.frontend(waveform)                                  # (B, 1, T, 64)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)              # normalize per mel bin
        for k in range(1, len(CHANNELS) + 1):
            pool = (2, 2) if k < len(CHANNELS) else (1, 1)
            x = getattr(self, f"conv_block{k}")(x, pool)
            x = F.dropout(x, p=0.2, training=self.training)
        x = x.mean(dim=3)                                            # (B, 2048, T')
        x = x.max(dim=2).values + x.mean(dim=2)                      # (B, 2048)
        x = F.dropout(x, p=0.5, training=self.training)
        x = F.relu(self.fc1(x))
        # As in PANNs: dropout on the returned embedding only, not on the classifier input.
        embedding = F.dropout(x, p=0.5, training=self.training)
        return {"embedding": embedding, "clipwise_output": torch.sigmoid(self.fc_audioset(x))}


def read_official_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The `model` state dict of a PANNs checkpoint file.

    Raises FileNotFoundError / CheckpointError with a one-line message naming `path`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CNN14 checkpoint {path} not found: {CHECKPOINT_HINT}")
    try:
        checkpoint = _torch_load(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({reason}): "
                              f"{CHECKPOINT_HINT}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise CheckpointError(f"{path} has no 'model' state dict: {CHECKPOINT_HINT}")
    return checkpoint["model"]


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # The official file also pickles its training sampler's state (numpy objects),
        # which the weights-only loader refuses; the user vouches for the file they pass.
        return torch.load(path, map_location="cpu", weights_only=False)


def checkpoint_key_map(model: Cnn14Emb512) -> dict[str, str]:
    """Our state-dict key → the official checkpoint key (every key of `model.state_dict()`).

    The network keys are identical by construction; the front end has no persistent state.
    """
    return {key: key for key in model.state_dict()}


def load_official_state_dict(model: Cnn14Emb512, state: dict[str, Tensor],
                             source: str | Path = "checkpoint") -> None:
    """Copy the official Cnn14_emb512 `state` into `model`, checking names, shapes and melW.

    Every checkpoint key must map to a model key or be a known front-end extra; every
    model key must be present (BatchNorm `num_batches_tracked`, unused at inference, may
    be absent). Raises CheckpointError naming `source` and the first offending keys.
    """
    key_map = checkpoint_key_map(model)
    ours = model.state_dict()
    known = set(key_map.values()) | {_CHECKPOINT_MEL_KEY}
    unexpected = [k for k in state if k not in known and not k.startswith(_IGNORED_PREFIX)]
    missing = [k for k, c in key_map.items()
               if c not in state and not k.endswith("num_batches_tracked")]
    wrong_shape = [f"{c} {tuple(state[c].shape)} != {tuple(ours[k].shape)}"
                   for k, c in key_map.items() if c in state and state[c].shape != ours[k].shape]
    problems = [(label, keys) for label, keys in (("missing", missing),
                                                  ("unexpected", unexpected),
                                                  ("wrong shape", wrong_shape)) if keys]
    if problems:
        detail = "; ".join(f"{label}: {', '.join(keys[:4])}"
                           + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
                           for label, keys in problems)
        raise CheckpointError(f"{source} is not a Cnn14_emb512 checkpoint ({detail}): "
                              f"{CHECKPOINT_HINT}")
    if _CHECKPOINT_MEL_KEY in state:
        _check_mel(model.frontend.melW, state[_CHECKPOINT_MEL_KEY], source)
    with torch.no_grad():
        for k, c in key_map.items():
            if c in state:
                ours[k].copy_(state[c])


def load_official_checkpoint(model: Cnn14Emb512, path: str | Path) -> None:
    """Load PANNs' `Cnn14_emb512_mAP=0.420.pth` (or any file of that layout) into `model`."""
    load_official_state_dict(model, read_official_state_dict(path), path)


def _check_mel(ours: Tensor, theirs: Tensor, source: str | Path) -> None:
    """Our mel bank must be the one the network was trained with (SPEC §8)."""
    if theirs.shape != ours.shape:
        raise CheckpointError(f"{source}: {_CHECKPOINT_MEL_KEY} has shape "
                              f"{tuple(theirs.shape)}, ours {tuple(ours.shape)}")
    theirs = theirs.to(ours)
    if not torch.allclose(theirs, ours, rtol=1e-4, atol=1e-7):
        diff = (theirs - ours).abs().max().item()
        raise CheckpointError(f"{source}: {_CHECKPOINT_MEL_KEY} differs from our mel filter "
                              f"bank (max abs difference {diff:.3g}); the checkpoint was made "
                              f"with another front end")
