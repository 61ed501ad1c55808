"""Write small synthetic videos with PyAV (used by the tests and the demo).

The codecs are the high-quality ones the pinned PyAV wheel ships, so decoded frames stay
close to the input: `.avi` is MPEG-4 Part 2 video with 16-bit PCM audio, `.mp4` is H.264
(libx264, near-lossless CRF) with AAC audio.
"""
from pathlib import Path

import numpy as np

from util_scripts.pyav import require_av

_CODECS = {  # extension -> (video codec, video options, audio codec)
    ".avi": ("mpeg4", {"qscale": "1"}, "pcm_s16le"),
    ".mp4": ("libx264", {"crf": "4", "preset": "veryfast", "threads": "1"}, "aac"),
}


def encode_video(path: str | Path, frames: np.ndarray, fps: int = 25,
                 audio: np.ndarray | None = None, audio_rate: int = 32000) -> None:
    """Encode `frames` (and optionally a mono audio track) into the video file `path`.

    frames: (T, H, W, 3) uint8 RGB. H and W must be even (4:2:0 chroma).
    fps: frame rate; frame t is shown at time t / fps.
    audio: optional (n_samples,) float32 in [-1, 1], sampled at `audio_rate` Hz.
    The codec is chosen by the extension of `path` (`.avi` or `.mp4`).
    Raises MissingPyAV when PyAV is not installed.
    """
    av = require_av()
    path = Path(path)
    if path.suffix not in _CODECS:
        raise ValueError(f"{path}: unsupported extension, use one of {sorted(_CODECS)}")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: frames must be (T, H, W, 3) uint8, got "
                         f"{frames.shape} {frames.dtype}")
    video_codec, video_options, audio_codec = _CODECS[path.suffix]
    with av.open(str(path), mode="w") as container:
        video = container.add_stream(video_codec, rate=fps)
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        video.options = video_options
        sound = None
        if audio is not None:
            sound = container.add_stream(audio_codec, rate=audio_rate)
            sound.layout = "mono"
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if sound is not None:
            samples = np.asarray(audio, dtype=np.float32).reshape(1, -1)
            # The encoder's own resampler converts to its sample format and frame size.
            chunk = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            chunk.sample_rate = audio_rate
            container.mux(sound.encode(chunk))
            container.mux(sound.encode())
