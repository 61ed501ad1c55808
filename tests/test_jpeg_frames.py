"""The converter's frames against the original's ffmpeg command (tests/fixtures/cli_frames).

The fixture holds small videos and the JPEG frames the ffmpeg 5.1 CLI wrote for them with
the original release's command; `make_fixture.py` there made them (CI has no ffmpeg CLI).
Tolerances: the frame count is exact. Unscaled frames are pixel-identical on the machine
that made the fixture; 0.25 grey levels leaves room for another CPU's SIMD code in the JPEG
encoder. Scaled frames differ by one level in about 10% of the chroma samples (the scaler's
vertical SIMD arithmetic, see util_scripts/jpeg_frames.py), measured 0.6-0.7 grey levels
after JPEG coding at these tiny sizes: the bound is the original's "under 1 grey level".
JPEG bytes within 5%: the encoder and its rate control are the CLI's (measured within 0.2%).
"""
import io
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from util_scripts.generate_video_hdf5 import convert_video

pytest.importorskip("av", reason="converting videos needs PyAV")
from util_scripts.jpeg_frames import autorotate_filters  # noqa: E402 (imports PyAV)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "cli_frames"
CASES = json.loads((FIXTURE / "fixture.json").read_text())["cases"]
MAX_GREY_LEVELS = {"texture_48": 0.25, "late_48": 0.25, "rgb_48": 0.25,
                   "texture_36": 1.0, "texture_36_fps10": 1.0, "rgb_36": 1.0}


def decode(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=float)


def convert(tmp_path: Path, case: str, jpeg_quality: int | None = None) -> list[bytes]:
    spec = CASES[case]
    dst = tmp_path / f"{case}.hdf5"
    result = convert_video(FIXTURE / spec["video"], dst, spec["size"], spec["fps"], None,
                           jpeg_quality)
    assert result.status == "converted", result.error
    with h5py.File(dst, "r") as f:
        return [bytes(item) for item in f["video"]]


def cli_frames(case: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((FIXTURE / case).glob("image_*.jpg"))]


@pytest.mark.parametrize("case", sorted(CASES))
def test_frames_are_the_ffmpeg_clis(tmp_path, case):
    ours, theirs = convert(tmp_path, case), cli_frames(case)
    assert len(theirs) == CASES[case]["frames"]
    assert len(ours) == len(theirs)
    grey_levels = np.mean([np.abs(decode(a) - decode(b)).mean() for a, b in zip(ours, theirs)])
    assert grey_levels < MAX_GREY_LEVELS[case]
    assert decode(ours[0]).shape == decode(theirs[0]).shape
    byte_ratio = sum(map(len, ours)) / sum(map(len, theirs))
    assert 0.95 < byte_ratio < 1.05


def test_late_video_track_repeats_its_first_frame_as_the_cli_does(tmp_path):
    # late.mp4: the video starts 0.2 s (5 frames) after the audio and has a 0.12 s gap after
    # its 6th frame; the CLI wrote 20 frames for its 12.
    ours, theirs = convert(tmp_path, "late_48"), cli_frames("late_48")
    distances = np.array([[np.abs(decode(a) - decode(b)).mean() for b in theirs] for a in ours])
    # Every frame of ours is closest to the CLI's frame at the same position (repeated frames
    # are equally close to their copies).
    for k, row in enumerate(distances):
        assert row[k] <= row.min() + 1e-9


def full_range_luma(y: np.ndarray) -> np.ndarray:
    """The CLI's limited-to-full range luma (libswscale 6, 15-bit intermediate, rounded)."""
    y15 = np.minimum(y.astype(np.int64) << 7, 30189)
    return (((y15 * 19077 - 39057361) >> 14) + 64) >> 7


def jpeg_luma(jpeg: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(jpeg))
    image.draft("YCbCr", image.size)   # libjpeg's own Y, no colour conversion
    return np.asarray(image)[..., 0].astype(float)


def test_jpeg_quality_stores_the_same_frames_at_a_higher_quality(tmp_path):
    import av
    with av.open(str(FIXTURE / "texture.avi")) as container:   # 64x48: stored unscaled
        source = [full_range_luma(np.frombuffer(f.planes[0], np.uint8)
                                  .reshape(f.planes[0].height, -1)[:, :f.width])
                  for f in container.decode(video=0)]
    default = convert(tmp_path, "texture_48")
    (tmp_path / "texture_48.hdf5").unlink()
    best = convert(tmp_path, "texture_48", jpeg_quality=100)
    assert len(best) == len(default) == len(source)

    def error(jpegs):
        return np.mean([np.abs(jpeg_luma(j) - s).mean() for j, s in zip(jpegs, source)])

    assert error(best) < 0.25 < error(default)
    assert sum(map(len, best)) > sum(map(len, default))


ROTATE_90 = (0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30)    # mp4 `rotate=90` metadata
ROTATE_180 = (-65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30)
ROTATE_270 = (0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)


def test_autorotation_follows_the_clis_filters():
    # Checked against ffmpeg 5.1 on an H.264 file remuxed with each of these matrices: its
    # frames came out turned counter-clockwise for `rotate=90`, clockwise for 270, upside down
    # for 180, and mirrored + turned, or flipped, for the last two (and so did ours).
    assert autorotate_filters(None) == []
    assert autorotate_filters((65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)) == []
    assert autorotate_filters(ROTATE_90) == [("transpose", "cclock")]
    assert autorotate_filters(ROTATE_270) == [("transpose", "clock")]
    assert autorotate_filters(ROTATE_180) == [("hflip", None), ("vflip", None)]
    # A mirror image (x flipped) turned by 90 degrees, and a plain vertical flip.
    assert autorotate_filters((0, 65536, 0, 65536, 0, 0, 0, 0, 1 << 30)) == [("transpose", "cclock_flip")]
    assert autorotate_filters((65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30)) == [("vflip", None)]
