"""End-to-end tests of util_scripts/generate_video_hdf5.py on small videos made with PyAV."""
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import wave
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from demo.media import encode_video
from tests.conftest import REPO
from util_scripts.generate_video_hdf5 import convert_video, main

pytest.importorskip("av", reason="encoding and converting videos needs PyAV")

H, W = 48, 64


def make_frames(n: int, height: int = H, width: int = W) -> np.ndarray:
    """(n <= 16, height, width, 3) uint8: smooth gradients, and per frame one of 16 offsets
    60 apart in green or blue, so codecs keep them close and frames are easy to tell apart."""
    assert n <= 16
    y, x = np.mgrid[0:height, 0:width]
    frames = np.empty((n, height, width, 3), np.uint8)
    for t in range(n):
        frames[t, ..., 0] = 40 + 150 * x / (width - 1)
        frames[t, ..., 1] = 20 + 60 * (t % 4)
        frames[t, ..., 2] = 20 + 60 * (t // 4) + 40 * y / (height - 1)
    return frames


def sine(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def halve(frame: np.ndarray) -> np.ndarray:
    """Oracle for a 2x downscale: mean over 2x2 blocks. (H, W, 3) -> (H/2, W/2, 3) float."""
    h, w, c = frame.shape
    return frame.reshape(h // 2, 2, w // 2, 2, c).astype(float).mean(axis=(1, 3))


def read_hdf5(path: Path) -> list[np.ndarray]:
    with h5py.File(path, "r") as f:
        return [np.asarray(Image.open(io.BytesIO(item)).convert("RGB")) for item in f["video"]]


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


@pytest.fixture(scope="module")
def ucf_like(tmp_path_factory) -> dict:
    """A UCF-like folder (2 good videos, a corrupt and an empty one) converted once, here:
    each test that reads the result runs on its own too."""
    root = tmp_path_factory.mktemp("ucf")
    videos = root / "videos"
    (videos / "Alpha").mkdir(parents=True)
    (videos / "Beta").mkdir()
    sources = {"Alpha/a1": make_frames(16), "Alpha/a2": make_frames(11)}
    encode_video(videos / "Alpha/a1.avi", sources["Alpha/a1"], fps=25,
                 audio=sine(1000, 44100), audio_rate=44100)
    encode_video(videos / "Alpha/a2.avi", sources["Alpha/a2"], fps=25)
    (videos / "Beta/b1.avi").write_bytes(np.random.default_rng(0).bytes(4096))
    (videos / "Beta/b2.avi").write_bytes(b"")
    encode_video(videos / "Beta/ignored.mp4", make_frames(4), fps=25)  # wrong extension
    args = ["--dir_path", str(videos), "--dst_path", str(root / "hdf5"), "--dataset", "ucf101",
            "--size", str(H // 2), "--audio_dst_path", str(root / "wav")]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(args + ["--n_jobs", "2"])
    return {"root": root, "videos": videos, "sources": sources, "args": args, "code": code,
            "stderr": stderr.getvalue()}


def test_conversion_reports_exactly_the_bad_videos(ucf_like):
    code, err = ucf_like["code"], ucf_like["stderr"]
    failed = [line.removeprefix("failed: ").split(": ")[0] for line in err.splitlines()
              if line.startswith("failed: ")]
    assert code == 1
    assert [Path(f).relative_to(ucf_like["videos"]).as_posix() for f in failed] == \
        ["Beta/b1.avi", "Beta/b2.avi"]
    assert "2 converted, 0 skipped, 2 failed" in err
    assert "1 videos without audio track" in err
    # stderr is not a terminal here: one progress line, no carriage-return redraws.
    assert "\r" not in err and len(re.findall(r"^hdf5: 4 videos in \d+\.\d s$", err, re.M)) == 1
    hdf5 = sorted(p.relative_to(ucf_like["root"] / "hdf5").as_posix()
                  for p in (ucf_like["root"] / "hdf5").rglob("*") if p.is_file())
    assert hdf5 == ["Alpha/a1.hdf5", "Alpha/a2.hdf5"]
    assert not list(ucf_like["root"].rglob("*.tmp"))


def test_frames_match_the_source(ucf_like):
    for name, source in ucf_like["sources"].items():
        frames = read_hdf5(ucf_like["root"] / "hdf5" / f"{name}.hdf5")
        assert len(frames) == len(source)
        oracles = [halve(f) for f in source]
        for t, frame in enumerate(frames):
            assert frame.shape == (H // 2, W // 2, 3)  # short side == --size
            errors = [mean_abs(frame, oracle) for oracle in oracles]
            assert errors[t] < 6, (name, t, errors[t])
            assert int(np.argmin(errors)) == t


def test_original_loader_reads_the_file(ucf_like):
    path = ucf_like["root"] / "hdf5" / "Alpha/a2.hdf5"
    frame_indices = [0, 3, 10]
    # The original release's loader, verbatim.
    with h5py.File(path, "r") as f:
        video_data = f["video"]
        frames = [Image.open(io.BytesIO(video_data[i])) for i in frame_indices]
    assert [frame.format for frame in frames] == ["JPEG"] * 3
    assert all(frame.size == (W // 2, H // 2) for frame in frames)
    with h5py.File(path, "r") as f:
        assert f["video"].dtype == h5py.vlen_dtype(np.dtype("uint8"))
        assert f["video"].ndim == 1


def test_wav_is_32k_mono_with_the_sine(ucf_like):
    with wave.open(str(ucf_like["root"] / "wav" / "Alpha/a1.wav")) as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (32000, 1, 2)
        samples = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").astype(float)
    assert abs(len(samples) - 32000) < 400
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * 32000 / len(samples)
    assert abs(peak_hz - 1000) < 3
    assert 0.4 < np.abs(samples).max() / 32768 < 0.6
    assert not (ucf_like["root"] / "wav" / "Alpha/a2.wav").exists()


def test_second_run_skips_finished_files(ucf_like, capsys):
    done = ucf_like["root"] / "hdf5" / "Alpha/a1.hdf5"
    before = done.stat().st_mtime_ns
    assert main(ucf_like["args"] + ["--n_jobs", "1"]) == 1
    err = capsys.readouterr().err
    assert "0 converted, 2 skipped, 2 failed" in err
    assert done.stat().st_mtime_ns == before
    assert not list(ucf_like["root"].rglob("*.tmp"))


def test_shards_split_the_sorted_list(ucf_like, tmp_path, capsys):
    # Sorted: Alpha/a1, Alpha/a2, Beta/b1, Beta/b2 -> shard 1 of 2 is a2 and b2.
    args = ["--dir_path", str(ucf_like["videos"]), "--dst_path", str(tmp_path), "--dataset",
            "ucf101", "--n_jobs", "1", "--split", "1", "--total_split", "2"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "1 converted, 0 skipped, 1 failed" in err and "b2.avi: empty file" in err
    assert [p.name for p in tmp_path.rglob("*.hdf5")] == ["a2.hdf5"]


def test_a_folder_without_the_datasets_extension_names_the_dataset_option(tmp_path, capsys):
    (tmp_path / "videos" / "Alpha").mkdir(parents=True)
    (tmp_path / "videos" / "Alpha" / "a1.avi").write_bytes(b"")
    assert main(["--dir_path", str(tmp_path / "videos"), "--dst_path", str(tmp_path / "hdf5"),
                 "--dataset", "kinetics"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: no .mp4 files under {tmp_path / 'videos'}: --dataset kinetics reads .mp4 files "
        "(.avi: hmdb51, ucf101; .mp4: the others; remux other containers)"]


def test_audio_is_added_to_an_existing_hdf5(tmp_path):
    src = tmp_path / "clip.mp4"
    encode_video(src, make_frames(10), fps=25, audio=sine(440, 48000), audio_rate=48000)
    dst, wav = tmp_path / "clip.hdf5", tmp_path / "clip.wav"
    assert convert_video(src, dst, H, None, None).status == "converted"
    result = convert_video(src, dst, H, None, wav)
    assert (result.status, result.audio, result.n_frames) == ("skipped", "written", 10)
    with wave.open(str(wav)) as f:
        samples = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").astype(float)
    peak_hz = np.argmax(np.abs(np.fft.rfft(samples))) * 32000 / len(samples)
    assert abs(peak_hz - 440) < 3


def test_fps_interpolates_between_the_source_frames(tmp_path):
    # The original's `minterpolate=50` on 25 fps: output frame 2k falls on source frame k and
    # is a copy of it; frame 2k+1 lies between source frames k and k+1: a blend of the two,
    # or a copy of one where minterpolate sees a scene change (this clip jumps every 4 frames).
    source = make_frames(16)
    src = tmp_path / "clip.mp4"
    encode_video(src, source, fps=25)
    result = convert_video(src, tmp_path / "clip.hdf5", H, 50.0, None)
    frames = read_hdf5(tmp_path / "clip.hdf5")
    assert result.n_frames == len(frames) >= 2 * (len(source) - 2)
    blends = 0
    for j, frame in enumerate(frames):
        errors = [mean_abs(frame, s) for s in source]
        k = j // 2
        if j % 2 == 0:
            assert errors[k] < 6 and int(np.argmin(errors)) == k
        else:
            assert int(np.argmin(errors)) in (k, k + 1)
            blends += min(errors[k], errors[k + 1]) > 6 and abs(errors[k] - errors[k + 1]) < 2
    assert blends >= 4


def test_portrait_video_keeps_its_aspect(tmp_path):
    # --size is the short side, here the width: 32 × 64 frames are halved to 16 × 32. Each
    # frame within 3 grey levels of its halved source (measured 0.9; upside down it is 7).
    source = make_frames(3, height=64, width=32)
    src = tmp_path / "tall.mp4"
    encode_video(src, source, fps=25)
    assert convert_video(src, tmp_path / "tall.hdf5", 16, None, None).status == "converted"
    frames = read_hdf5(tmp_path / "tall.hdf5")
    assert len(frames) == len(source)
    for t, frame in enumerate(frames):
        assert frame.shape == (32, 16, 3)
        errors = [mean_abs(frame, halve(s)) for s in source]
        assert errors[t] < 3 and int(np.argmin(errors)) == t, (t, errors)


def test_user_error_is_one_line(tmp_path, capsys):
    code = main(["--dir_path", str(tmp_path / "nowhere"), "--dst_path", str(tmp_path),
                 "--dataset", "ucf101"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: --dir_path") and "\n" not in err


# A process with threads: PyAV's encoder threads, and one that holds h5py's global lock (as
# any thread inside an h5py call does) when the converter starts its two worker processes.
# A forked worker inherits the lock held, with no thread to release it, and hangs at its
# first h5py call; a worker started as a fresh interpreter does not.
THREADED_PARENT = """
import sys, threading
import numpy as np
from h5py import _objects
from demo.media import encode_video
from util_scripts.generate_video_hdf5 import main
root = sys.argv[1]
for k in range(2):
    encode_video(f"{root}/videos/c/v{k}.mp4", np.full((8, 32, 48, 3), 40 * k, np.uint8))
held, release = threading.Event(), threading.Event()
def hold_h5py_lock():
    with _objects.phil:
        held.set()
        release.wait()
holder = threading.Thread(target=hold_h5py_lock)
holder.start()
held.wait()
code = main(["--dir_path", f"{root}/videos", "--dst_path", f"{root}/hdf5",
             "--dataset", "kinetics", "--size", "32", "--n_jobs", "2"])
release.set()
holder.join()
sys.exit(code)
"""


def test_workers_do_not_inherit_a_threaded_parents_locks(tmp_path):
    (tmp_path / "videos" / "c").mkdir(parents=True)
    process = subprocess.Popen([sys.executable, "-c", THREADED_PARENT, str(tmp_path)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        _, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)   # the parent and its hung workers
        process.communicate()
        pytest.fail("the converter's worker processes hung (forked from a threaded process?)")
    assert process.returncode == 0, err
    assert sorted(p.name for p in (tmp_path / "hdf5" / "c").iterdir()) == ["v0.hdf5", "v1.hdf5"]


def test_fps_below_minterpolates_smallest_size_is_a_user_error(tmp_path, capsys):
    (tmp_path / "videos").mkdir()
    encode_video(tmp_path / "videos" / "v.avi", make_frames(4), fps=25)
    code = main(["--dir_path", str(tmp_path / "videos"), "--dst_path", str(tmp_path / "hdf5"),
                 "--dataset", "ucf101", "--size", "24", "--fps", "10"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: --fps") and "--size 32" in err and "\n" not in err
    assert not (tmp_path / "hdf5").exists()


@pytest.mark.parametrize("quality", ["0", "101"])
def test_jpeg_quality_outside_1_to_100_is_a_user_error(tmp_path, capsys, quality):
    (tmp_path / "videos").mkdir()
    code = main(["--dir_path", str(tmp_path / "videos"), "--dst_path", str(tmp_path / "hdf5"),
                 "--dataset", "ucf101", "--jpeg_quality", quality])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --jpeg_quality") and "\n" not in err
