"""Log-mel front end of the PANNs CNNs (SPEC §8), written with torch.stft instead of
torchlibrosa's convolution kernels; numerically the same transform."""
import math

import torch
from torch import Tensor, nn

# Slaney mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(hz: Tensor) -> Tensor:
    """Slaney mel of frequencies `hz` (any shape, float64 recommended)."""
    log_part = _MIN_LOG_MEL + torch.log(hz.clamp(min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return torch.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def mel_to_hz(mel: Tensor) -> Tensor:
    """Inverse of `hz_to_mel` (any shape)."""
    log_part = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (mel.clamp(min=_MIN_LOG_MEL) - _MIN_LOG_MEL))
    return torch.where(mel >= _MIN_LOG_MEL, log_part, mel * _F_SP)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float,
                   fmax: float) -> Tensor:
    """librosa's default mel filter bank, transposed: `librosa.filters.mel(...).T`.

    Filter m is a triangle over the FFT bin frequencies rising from f_m to f_{m+1} and
    falling to f_{m+2}, where f_0..f_{n_mels+1} are equally spaced on the Slaney mel scale
    from fmin to fmax; it is scaled by 2 / (f_{m+2} - f_m) (Slaney area normalization).
    Computed in float64 and returned as float32 of shape (n_fft // 2 + 1, n_mels).
    """
    fft_freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * (sample_rate / n_fft)
    mel_edges = torch.linspace(hz_to_mel(torch.tensor(fmin, dtype=torch.float64)).item(),
                               hz_to_mel(torch.tensor(fmax, dtype=torch.float64)).item(),
                               n_mels + 2, dtype=torch.float64)
    edges = mel_to_hz(mel_edges)                                    # (n_mels + 2,)
    widths = edges.diff()                                           # (n_mels + 1,)
    ramps = edges[:, None] - fft_freqs[None, :]                     # (n_mels + 2, F)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = torch.minimum(rising, falling).clamp(min=0)           # (n_mels, F)
    weights = weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.T.contiguous().float()


class LogMelFrontEnd(nn.Module):
    """Waveform → log-mel spectrogram exactly as PANNs' Spectrogram + LogmelFilterBank.

    STFT with a periodic Hann window, centered with reflect padding; power |X|²; mel
    projection with `melW`; 10·log10(max(x, amin)) with ref 1.0 and no top_db (SPEC §8).
    The defaults are Cnn14's (32 kHz); Cnn14_16k uses 16000, 512, 160, 64, 50, 8000.
    `melW` (n_fft//2+1, n_mels) is a non-persistent buffer: it is derived from the
    constructor arguments, and the loader compares it with the checkpoint's copy.
    """

    def __init__(self, sample_rate: int = 32000, n_fft: int = 1024, hop_length: int = 320,
                 n_mels: int = 64, fmin: float = 50.0, fmax: float = 14000.0,
                 amin: float = 1e-10):
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length, self.amin = (
            sample_rate, n_fft, hop_length, amin)
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True),
                             persistent=False)
        self.register_buffer("melW", mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax),
                             persistent=False)

    def forward(self, waveform: Tensor) -> Tensor:
        """waveform (B, N) float, N > n_fft // 2 → log-mel (B, 1, 1 + N // hop, n_mels) in dB."""
        if waveform.dim() != 2 or waveform.shape[1] <= self.n_fft // 2:
            raise ValueError(f"waveform must be (batch, samples) with more than "
                             f"{self.n_fft // 2} samples, got {tuple(waveform.shape)}")
        spec = torch.stft(waveform, n_fft=self.n_fft, hop_length=self.hop_length,
                          win_length=self.n_fft, window=self.window, center=True,
                          pad_mode="reflect", return_complex=True)   # (B, F, frames)
        power = spec.real.square() + spec.imag.square()
        mel = power.transpose(1, 2) @ self.melW                     # (B, frames, n_mels)
        return (10.0 * torch.log10(mel.clamp(min=self.amin)))[:, None]
