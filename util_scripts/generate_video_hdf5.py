"""Convert videos to per-video HDF5 files of JPEG frames (SPEC §1), optionally with WAV audio.

Input `<dir_path>/<class>/<video>.<ext>` (or flat `<dir_path>/<video>.<ext>`), output the
same relative layout under `--dst_path` with `.hdf5`: dataset `video` is a 1-D array of
variable-length uint8, item k-1 the JPEG bytes of frame k. With `--audio_dst_path` the
audio track is also written as 32 kHz mono 16-bit PCM `<audio_dst_path>/<class>/<video>.wav`.

Decoding uses PyAV (no system ffmpeg). Finished files are skipped, so an interrupted run
can simply be restarted; files are written as `<name>.tmp` and renamed when complete.
"""
import argparse
import io
import multiprocessing
import os
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import h5py
import numpy as np
from PIL import Image
from tqdm import tqdm

EXTENSIONS = {"ucf101": ".avi", "hmdb51": ".avi", "kinetics": ".mp4",
              "activitynet": ".mp4", "vggsound": ".mp4"}
AUDIO_RATE = 32000  # what PANNs CNN14 expects (SPEC §8)
JPEG_QUALITY = 90  # about ffmpeg's `-q:v 2`, used by the original release
# Output frame times are compared to source timestamps with this slack (seconds) so that
# float rounding never drops or duplicates a frame when the target fps divides the source.
_TIME_EPS = 1e-6


@dataclass(frozen=True)
class ConversionResult:
    """Outcome of one video.

    status: "converted", "skipped" (HDF5 already there) or "failed" (see `error`).
    n_frames: frames in the HDF5 file (0 when failed).
    audio: "written", "exists" (WAV already there), "none" (the video has no audio
        track) or "off" (no audio requested, or the conversion failed).
    """
    source: Path
    status: str
    n_frames: int = 0
    audio: str = "off"
    error: str = ""


def scaled_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the short side equal to `size`, aspect ratio kept (rounded)."""
    if width <= height:
        return size, max(1, round(height * size / width))
    return max(1, round(width * size / height)), size


def _encode_jpeg(frame: av.VideoFrame, size: int) -> np.ndarray:
    """JPEG bytes (uint8 array) of `frame` scaled to short side `size`."""
    image = frame.to_image()
    target = scaled_size(image.width, image.height, size)
    if image.size != target:
        image = image.resize(target, Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def _write_hdf5(path: Path, jpegs: list[np.ndarray]) -> None:
    items = np.empty(len(jpegs), dtype=object)
    items[:] = jpegs
    with h5py.File(path, "w") as f:
        f.create_dataset("video", data=items, dtype=h5py.vlen_dtype(np.dtype("uint8")))


def _write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(AUDIO_RATE)
        f.writeframes(samples.astype("<i2").tobytes())


class _FrameSampler:
    """Collects the JPEG frames of one video, resampled to `fps` by timestamp.

    Output frame j (time j / fps) is the last source frame whose time is <= j / fps, up
    to the end of the last source frame: frames are dropped when `fps` is below the
    source rate and repeated when above. Only the current source frame is held, and it
    is JPEG-encoded only if it is shown.
    """

    def __init__(self, size: int, fps: float | None):
        self.size, self.fps = size, fps
        self.jpegs: list[np.ndarray] = []
        self._held: av.VideoFrame | None = None
        self._held_jpeg: np.ndarray | None = None
        self._held_time = self._start = 0.0

    def push(self, frame: av.VideoFrame, time: float) -> None:
        """Add the next source frame in presentation order; `time` in seconds."""
        if self.fps is None:
            self.jpegs.append(_encode_jpeg(frame, self.size))
            return
        if self._held is None:
            self._start = time
        else:
            self._emit_until(time - self._start)
        self._held, self._held_jpeg, self._held_time = frame, None, time - self._start

    def finish(self, frame_step: float) -> list[np.ndarray]:
        """The JPEG list; `frame_step` (s) is how long the last source frame lasts."""
        if self.fps is not None and self._held is not None:
            self._emit_until(self._held_time + frame_step)
        return self.jpegs

    def _emit_until(self, end: float) -> None:
        while len(self.jpegs) / self.fps < end - _TIME_EPS:
            if self._held_jpeg is None:
                self._held_jpeg = _encode_jpeg(self._held, self.size)
            self.jpegs.append(self._held_jpeg)


def _decode(src: Path, size: int, fps: float | None, want_video: bool,
            want_audio: bool) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Decode `src` once: JPEG frames (if `want_video`) and 32 kHz mono int16 audio.

    Returns (jpegs, audio): audio is None when not wanted or the file has no audio track.
    """
    with av.open(str(src)) as container:
        if want_video and not container.streams.video:
            raise ValueError("no video stream")
        video = container.streams.video[0] if want_video else None
        sound = container.streams.audio[0] if want_audio and container.streams.audio else None
        streams = [s for s in (video, sound) if s is not None]
        if not streams:
            return [], None
        frame_step = 1 / 25  # only for streams without any rate information
        if video is not None:
            video.thread_type = "AUTO"
            rate = video.average_rate or video.guessed_rate
            frame_step = float(1 / rate) if rate else frame_step
        sampler = _FrameSampler(size, fps)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
        chunks, n_video = [], 0
        for packet in container.demux(streams):
            for decoded in packet.decode():
                if packet.stream is sound:
                    chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(decoded))
                else:
                    time = decoded.time if decoded.time is not None else n_video * frame_step
                    sampler.push(decoded, time)
                    n_video += 1
        audio = None
        if sound is not None:
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
            audio = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    return sampler.finish(frame_step), audio


def _frame_count(path: Path) -> int:
    with h5py.File(path, "r") as f:
        return len(f["video"])


def convert_video(src: Path, dst: Path, size: int, fps: float | None,
                  audio_dst: Path | None) -> ConversionResult:
    """Convert one video file `src` to the HDF5 file `dst` (and the WAV file `audio_dst`).

    size: short side of the stored frames, in pixels.
    fps: output frame rate (frames dropped/repeated by timestamp), or None for native.
    audio_dst: where to write the 32 kHz mono 16-bit WAV, or None for no audio.
    An existing `dst` (or `audio_dst`) is kept as it is. Never raises for a bad video:
    unreadable files and videos without frames come back with status "failed".
    """
    src, dst = Path(src), Path(dst)
    audio_dst = Path(audio_dst) if audio_dst is not None else None
    want_video = not dst.exists()
    want_audio = audio_dst is not None and not audio_dst.exists()
    temporaries: list[Path] = []
    jpegs: list[np.ndarray] = []
    audio = None
    try:
        if want_video or want_audio:
            jpegs, audio = _decode(src, size, fps, want_video, want_audio)
        if want_video and not jpegs:
            return ConversionResult(src, "failed", error="zero frames decoded")
        if audio is not None:
            temporaries.append(audio_dst.with_name(audio_dst.name + ".tmp"))
            audio_dst.parent.mkdir(parents=True, exist_ok=True)
            _write_wav(temporaries[-1], audio)
        if want_video:
            temporaries.append(dst.with_name(dst.name + ".tmp"))
            dst.parent.mkdir(parents=True, exist_ok=True)
            _write_hdf5(temporaries[-1], jpegs)
        for temporary in temporaries:
            os.replace(temporary, temporary.with_suffix(""))
        n_frames = len(jpegs) if want_video else _frame_count(dst)
    except (av.error.FFmpegError, OSError, ValueError) as e:
        empty = src.is_file() and src.stat().st_size == 0
        reason = "empty file" if empty else f"unreadable: {getattr(e, 'strerror', None) or e}"
        return ConversionResult(src, "failed", error=reason)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
    if audio_dst is None:
        audio_state = "off"
    elif want_audio:
        audio_state = "written" if audio is not None else "none"
    else:
        audio_state = "exists"
    return ConversionResult(src, "converted" if want_video else "skipped", n_frames,
                            audio_state)


def list_videos(dir_path: Path, extension: str) -> list[Path]:
    """Sorted video paths relative to `dir_path`: `<class>/<video><ext>` and `<video><ext>`."""
    found = [*dir_path.glob(f"*{extension}"), *dir_path.glob(f"*/*{extension}")]
    return sorted(p.relative_to(dir_path) for p in found if p.is_file())


def _convert_task(task: tuple) -> ConversionResult:
    return convert_video(*task)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir_path", type=Path, required=True,
                        help="folder of videos: <dir_path>/<class>/<video>.<ext>")
    parser.add_argument("--dst_path", type=Path, required=True, help="HDF5 output folder")
    parser.add_argument("--dataset", required=True, choices=sorted(EXTENSIONS),
                        help=".avi for ucf101/hmdb51, .mp4 for the others")
    parser.add_argument("--n_jobs", type=int, default=-1,
                        help="worker processes (-1: one per CPU core)")
    parser.add_argument("--fps", type=float, default=None,
                        help="output frame rate (default: the video's own)")
    parser.add_argument("--size", type=int, default=240, help="short side of the frames")
    parser.add_argument("--split", type=int, default=0,
                        help="shard index K: handle the sorted videos i with i %% N == K")
    parser.add_argument("--total_split", type=int, default=1, help="number of shards N")
    parser.add_argument("--audio_dst_path", type=Path, default=None,
                        help="also write 32 kHz mono WAVs here (same layout)")
    return parser.parse_args(argv)


def _user_error(args: argparse.Namespace) -> str | None:
    if not args.dir_path.is_dir():
        return f"--dir_path {args.dir_path} is not a folder (it must hold <class>/<video> files)"
    if args.size < 1:
        return f"--size must be positive, got {args.size}"
    if args.fps is not None and args.fps <= 0:
        return f"--fps must be positive, got {args.fps}"
    if args.total_split < 1 or not 0 <= args.split < args.total_split:
        return f"--split must be in [0, --total_split), got {args.split} of {args.total_split}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit code (1 when a video failed)."""
    args = _parse_args(argv)
    problem = _user_error(args)
    extension = EXTENSIONS[args.dataset]
    if problem is None:
        videos = list_videos(args.dir_path, extension)[args.split::args.total_split]
        if not videos:
            problem = f"no {extension} files under {args.dir_path} (shard {args.split})"
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    tasks = [(args.dir_path / v, (args.dst_path / v).with_suffix(".hdf5"), args.size, args.fps,
              None if args.audio_dst_path is None
              else (args.audio_dst_path / v).with_suffix(".wav")) for v in videos]
    n_jobs = args.n_jobs if args.n_jobs >= 1 else (os.cpu_count() or 1)
    progress = tqdm(total=len(tasks), unit="video", desc="hdf5")
    results = []
    if n_jobs == 1:
        for task in tasks:
            results.append(_convert_task(task))
            progress.update()
    else:
        with multiprocessing.Pool(min(n_jobs, len(tasks))) as pool:
            for result in pool.imap_unordered(_convert_task, tasks):
                results.append(result)
                progress.update()
    progress.close()
    return _summarize(results, args.audio_dst_path is not None)


def _summarize(results: list[ConversionResult], with_audio: bool) -> int:
    counts = {s: sum(r.status == s for r in results) for s in ("converted", "skipped", "failed")}
    line = ", ".join(f"{n} {s}" for s, n in counts.items())
    if with_audio:
        no_audio = sum(r.audio == "none" for r in results)
        line += f"; audio: {sum(r.audio in ('written', 'exists') for r in results)} WAV files, " \
                f"{no_audio} videos without audio track"
    print(line, file=sys.stderr)
    failed = sorted((r for r in results if r.status == "failed"), key=lambda r: r.source)
    for r in failed:
        print(f"failed: {r.source}: {r.error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
