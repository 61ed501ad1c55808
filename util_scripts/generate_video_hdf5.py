"""Convert videos to per-video HDF5 files of JPEG frames (SPEC §1), optionally with WAV audio.

Input `<dir_path>/<class>/<video>.<ext>` (or flat `<dir_path>/<video>.<ext>`), output the
same relative layout under `--dst_path` with `.hdf5`: dataset `video` is a 1-D array of
variable-length uint8, item k-1 the JPEG bytes of frame k. With `--audio_dst_path` the
audio track is also written as 32 kHz mono 16-bit PCM `<audio_dst_path>/<class>/<video>.wav`.

The frames are those of the original release's converter, the ffmpeg command
`ffmpeg -i VIDEO -vf scale=-1:240 -threads 1 image_%05d.jpg`, made through PyAV without a
system ffmpeg (util_scripts/jpeg_frames.py). Finished files are skipped, so an interrupted
run can simply be restarted; files are written as `<name>.tmp` and renamed when complete.
"""
import argparse
import multiprocessing
import os
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

if __package__ in (None, ""):  # run as `python util_scripts/<name>.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from errors import ArgumentParser
from util_scripts.pyav import MissingPyAV, require_av

EXTENSIONS = {"ucf101": ".avi", "hmdb51": ".avi", "kinetics": ".mp4",
              "activitynet": ".mp4", "vggsound": ".mp4"}
AUDIO_RATE = 32000  # what PANNs CNN14 expects (SPEC §8)
MIN_INTERPOLATED_SIZE = 32  # minterpolate refuses smaller frames (so does the original's CLI)
# Worker processes start as fresh interpreters: a fork of a process that runs threads (torch,
# PyAV's codec and scaler threads, the caller's own) inherits every lock such a thread held at
# that moment, with no thread left to release it (PyAV 19's frame conversion waits forever).
POOL_START_METHOD = "spawn"


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


def _decode(src: Path, size: int, fps: float | None, jpeg_quality: int | None,
            want_video: bool, want_audio: bool) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Decode `src` once: JPEG frames (if `want_video`) and 32 kHz mono int16 audio.

    Returns (jpegs, audio): audio is None when not wanted or the file has no audio track.
    """
    av = require_av()
    from util_scripts.jpeg_frames import JpegFrames  # imports PyAV

    with av.open(str(src)) as container:
        if want_video and not container.streams.video:
            raise ValueError("no video stream")
        video = container.streams.video[0] if want_video else None
        sound = container.streams.audio[0] if want_audio and container.streams.audio else None
        streams = [s for s in (video, sound) if s is not None]
        if not streams:
            return [], None
        frames = None
        if video is not None:
            video.thread_type = "AUTO"
            frames = JpegFrames(video, size, fps, jpeg_quality)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
        chunks = []
        for packet in container.demux(streams):
            for decoded in packet.decode():
                if packet.stream is sound:
                    chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(decoded))
                else:
                    frames.push(decoded)
        audio = None
        if sound is not None:
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
            audio = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        jpegs = [] if frames is None else [np.frombuffer(j, np.uint8) for j in frames.finish()]
    return jpegs, audio


def _frame_count(path: Path) -> int:
    with h5py.File(path, "r") as f:
        return len(f["video"])


def convert_video(src: Path, dst: Path, size: int, fps: float | None,
                  audio_dst: Path | None, jpeg_quality: int | None = None) -> ConversionResult:
    """Convert one video file `src` to the HDF5 file `dst` (and the WAV file `audio_dst`).

    size: short side of the stored frames, in pixels (the original's `scale=-1:size`, or
        `scale=size:-1` unless the video is wider than high).
    fps: output frame rate (the original's `minterpolate=fps`), or None for native.
    audio_dst: where to write the 32 kHz mono 16-bit WAV, or None for no audio.
    jpeg_quality: None for the original's mjpeg frames, else Pillow JPEG at this quality.
    An existing `dst` (or `audio_dst`) is kept as it is. Never raises for a bad video:
    unreadable files and videos without frames come back with status "failed".
    Raises MissingPyAV when PyAV is not installed.
    """
    av = require_av()
    src, dst = Path(src), Path(dst)
    audio_dst = Path(audio_dst) if audio_dst is not None else None
    want_video = not dst.exists()
    want_audio = audio_dst is not None and not audio_dst.exists()
    temporaries: list[Path] = []
    jpegs: list[np.ndarray] = []
    audio = None
    try:
        if want_video or want_audio:
            jpegs, audio = _decode(src, size, fps, jpeg_quality, want_video, want_audio)
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
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir_path", type=Path, required=True,
                        help="folder of videos: <dir_path>/<class>/<video>.<ext>")
    parser.add_argument("--dst_path", type=Path, required=True, help="HDF5 output folder")
    parser.add_argument("--dataset", required=True, choices=sorted(EXTENSIONS),
                        help=".avi for ucf101/hmdb51, .mp4 for the others")
    parser.add_argument("--n_jobs", type=int, default=-1,
                        help="worker processes (-1: one per CPU core)")
    parser.add_argument("--fps", type=float, default=None,
                        help="output frame rate, by motion-compensated interpolation as the "
                             "original (default: the video's own)")
    parser.add_argument("--size", type=int, default=240, help="short side of the frames")
    parser.add_argument("--jpeg_quality", type=int, default=None,
                        help="store Pillow JPEGs of this quality (1-100) instead of the "
                             "original's mjpeg frames (about 200 kb/s)")
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
    if args.fps is not None and args.size < MIN_INTERPOLATED_SIZE:
        return (f"--fps interpolates with ffmpeg's minterpolate, which needs frames of at least "
                f"{MIN_INTERPOLATED_SIZE} px: use --size {MIN_INTERPOLATED_SIZE} or more")
    if args.jpeg_quality is not None and not 1 <= args.jpeg_quality <= 100:
        return f"--jpeg_quality must be in [1, 100], got {args.jpeg_quality}"
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
            shard = f" in shard {args.split} of {args.total_split}" if args.total_split > 1 else ""
            problem = (f"no {extension} files under {args.dir_path}{shard}: --dataset {args.dataset} reads "
                       f"{extension} files (.avi: hmdb51, ucf101; .mp4: the others; remux other containers)")
    if problem is None:
        try:
            require_av()
        except MissingPyAV as e:
            problem = str(e)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    tasks = [(args.dir_path / v, (args.dst_path / v).with_suffix(".hdf5"), args.size, args.fps,
              None if args.audio_dst_path is None
              else (args.audio_dst_path / v).with_suffix(".wav"), args.jpeg_quality)
             for v in videos]
    n_jobs = args.n_jobs if args.n_jobs >= 1 else (os.cpu_count() or 1)
    # Imported here: the spawned workers import this module, and `datasets` brings torch.
    from datasets.progress import Progress
    progress = Progress("hdf5", total=len(tasks), unit="video")
    results = []
    if n_jobs == 1:
        for task in tasks:
            results.append(_convert_task(task))
            progress.update()
    else:
        context = multiprocessing.get_context(POOL_START_METHOD)
        with context.Pool(min(n_jobs, len(tasks))) as pool:
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
