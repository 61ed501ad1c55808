"""The JPEG frames the original release's converter writes for one video (SPEC §1), via PyAV.

The original runs the ffmpeg CLI (version 5.1 measured): `ffmpeg -i VIDEO -vf scale=-1:S
-threads 1 image_%05d.jpg`, with `scale=S:-1` unless the video is wider than high and
`,minterpolate=FPS` appended when a frame rate is asked for. `JpegFrames` does what that
command does, step by step:

1. time: frame times count from the start of the file (its earliest stream);
2. scaling: the CLI's autorotation (a video with a display matrix is turned upright by
   `transpose`/`hflip`/`vflip`), then the `scale` filter (swscale's bicubic) into the
   full-range "yuvj" pixel format the CLI negotiates for the mjpeg encoder;
3. with `fps`: the `minterpolate` filter (motion-compensated interpolation);
4. the CLI's constant frame rate for image files (util_scripts/frame_timing.py): output
   frame k is the frame at time k / rate, so frames are repeated over gaps and dropped
   where crowded;
5. the `mjpeg` encoder with the CLI's settings: libavcodec's defaults (rate control at
   200 kb/s, q 2-31, optimal Huffman tables) with the frame rate as time base (the rate
   control spreads the bit rate over the frames), one thread, and the sample aspect ratio
   (a JFIF header when it is known). With `jpeg_quality`, Pillow encodes the same pixels at
   that quality instead.

The libswscale that PyAV ships converts chroma to full range half a grey level lower than the
CLI's (the formula changed after ffmpeg 5.1; measured: half of the U and V samples differ by
one). For limited-range YUV sources the chroma planes are therefore also scaled at 16 bits
and range-converted here with the CLI's formula. 8-bit RGB sources go the same way (luma
too when unscaled): ffmpeg 5.1 converts RGB to limited-range YUV and then to full range with
those formulas.
Measured against the ffmpeg 5.1 CLI (dataset/README.md): unscaled 8-bit frames (UCF101,
HMDB51, and RGB videos) are pixel-identical, scaled ones differ by one level in about 10% of
the chroma and 1% of the luma samples.
"""
import io
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from PIL import Image

from util_scripts.frame_timing import ConstantRate, frame_position, rescale
from util_scripts.pyav import require_av

av = require_av()

# What the CLI offers the scale filter for the mjpeg encoder (best first).
JPEG_PIXEL_FORMATS = "yuvj420p|yuvj422p|yuvj444p"
# Limited-range planar YUV source (8 or 10 bits) -> (the full-range format the CLI picks,
# the 16-bit limited-range format its chroma is also scaled to).
_CHROMA_FIX = {f"yuv{layout}p{depth}": (f"yuvj{layout}p", f"yuv{layout}p16le")
               for layout in ("420", "422", "444") for depth in ("", "10le")}
# An 8-bit RGB source: the CLI picks yuvj444p; all three planes are also scaled to 16 bits.
_RGB_FIX = ("yuvj444p", "yuv444p16le")
# Full-range format -> (Pillow's name of its subsampling, chroma (rows, columns) per sample).
_SUBSAMPLING = {"yuvj420p": ("4:2:0", (2, 2)), "yuvj422p": ("4:2:2", (1, 2)),
                "yuvj444p": ("4:4:4", (1, 1))}
_FULL_RANGE = 2                        # AVCOL_RANGE_JPEG
_MICROSECOND = Fraction(1, 1_000_000)  # the unit of container.start_time
_DEFAULT_RATE = Fraction(25)           # the CLI's rate for a stream without one


def scale_argument(width: int, height: int, size: int) -> str:
    """The original's `scale` argument: height `size` if wider than high, else width `size`."""
    return f"-1:{size}" if width > height else f"{size}:-1"


def _to_full_range(plane16: np.ndarray, limit: int, gain: int, offset: int, shift: int) -> np.ndarray:
    """libswscale's limited-to-full-range step on the 15-bit intermediate x = plane16 >> 1:
    ((min(x, limit)·gain − offset) >> shift), rounded to 8 bits as (· + 64) >> 7."""
    x15 = plane16.astype(np.int64) >> 1
    full15 = (np.minimum(x15, limit) * gain - offset) >> shift
    return np.clip((full15 + 64) >> 7, 0, 255).astype(np.uint8)


def chroma_to_full_range(chroma16: np.ndarray) -> np.ndarray:
    """Full-range 8-bit chroma from limited-range 16-bit chroma, as the CLI's libswscale.

    chroma16: (h, w) uint16 chroma scaled at 16 bits (v·256 for an 8-bit value v).
    ffmpeg 5.1 converts the 15-bit intermediate c as (min(c, 30775)·4663 − 9289992) >> 12
    and rounds it to 8 bits as (· + 64) >> 7. Returns (h, w) uint8.
    """
    return _to_full_range(chroma16, 30775, 4663, 9289992, 12)


def _is_8bit_rgb(pix_fmt: str) -> bool:
    """RGB with 8-bit components (rgb24, bgr0, gbrp, ...): the sources whose 16-bit
    conversion gives back the CLI's 15-bit intermediate (deeper RGB does not)."""
    video_format = av.VideoFormat(pix_fmt)
    return video_format.is_rgb and all(c.bits == 8 for c in video_format.components)


def luma_to_full_range(luma16: np.ndarray) -> np.ndarray:
    """Full-range 8-bit luma from limited-range 16-bit luma, as the CLI's libswscale.

    luma16: (h, w) uint16 luma scaled at 16 bits (v·256 for an 8-bit value v).
    ffmpeg 5.1 converts the 15-bit intermediate y as (min(y, 30189)·19077 − 39057361) >> 14
    and rounds it to 8 bits as (· + 64) >> 7. Returns (h, w) uint8.
    """
    return _to_full_range(luma16, 30189, 19077, 39057361, 14)


def autorotate_filters(matrix: tuple[int, ...] | None) -> list[tuple[str, str | None]]:
    """The filters the CLI puts before `scale` to show a video upright (its `-autorotate`).

    matrix: the 9 int32 of the first frame's display matrix (16.16 fixed point), or None.
    Returns (filter, argument) pairs, as ffmpeg 5.1's configure_input_video_filter inserts
    them for the angle theta = -round(av_display_rotation_get(matrix)) modulo 360.
    """
    if matrix is None:
        return []
    m0, m1, m3, m4 = (matrix[i] / 65536 for i in (0, 1, 3, 4))
    if math.hypot(m0, m3) == 0 or math.hypot(m1, m4) == 0:
        return []
    rotation = -math.degrees(math.atan2(m1 / math.hypot(m1, m4), m0 / math.hypot(m0, m3)))
    theta = -math.copysign(math.floor(abs(rotation) + 0.5), rotation)   # C round()
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return [("transpose", "cclock_flip" if matrix[3] > 0 else "clock")]
    if abs(theta - 180) < 1:
        return [f for f, flip in ((("hflip", None), matrix[0] < 0), (("vflip", None), matrix[4] < 0))
                if flip]
    if abs(theta - 270) < 1:
        return [("transpose", "clock_flip" if matrix[3] < 0 else "cclock")]
    if abs(theta) > 1:
        return [("rotate", f"{theta:f}*PI/180")]
    return [("vflip", None)] if matrix[4] < 0 else []


@dataclass(frozen=True)
class VideoInfo:
    """What the CLI's filter graph input knows of a video stream (its first frame's)."""
    width: int
    height: int
    pix_fmt: str
    full_range: bool
    time_base: Fraction
    rate: Fraction
    aspect: Fraction       # sample aspect ratio; 0/1 when unknown
    rotation: tuple[tuple[str, str | None], ...]   # autorotate_filters

    def scaled_aspect(self, width: int, height: int) -> Fraction:
        """The sample aspect ratio after rotation and scaling to width x height."""
        if not self.aspect:
            return self.aspect
        if any(name == "transpose" for name, _ in self.rotation):
            return 1 / self.aspect * Fraction(height * self.height, width * self.width)
        return self.aspect * Fraction(height * self.width, width * self.height)


def _buffer(graph, info: VideoInfo, pix_fmt: str, width: int, height: int, aspect: Fraction):
    return graph.add("buffer", video_size=f"{width}x{height}", pix_fmt=pix_fmt,
                     time_base=str(info.time_base), frame_rate=str(info.rate),
                     pixel_aspect=f"{aspect.numerator}/{aspect.denominator}")


def _link(*nodes):
    """Link filters in a chain; returns the last one."""
    for a, b in zip(nodes, nodes[1:]):
        a.link_to(b)
    return nodes[-1]


def _pull_all(sink) -> list:
    frames = []
    while True:
        try:
            frames.append(sink.pull())
        except (av.error.BlockingIOError, av.error.EOFError):
            return frames


class _Scaler:
    """`scale=...` into the CLI's full-range pixel format, with the CLI's chroma rounding.

    Limited-range YUV is scaled twice from the same input: into the full-range format
    (its luma is the CLI's) and into 16-bit limited range (its chroma is converted to full
    range here). RGB is scaled the same two ways; unscaled, its luma is converted here too.
    """

    def __init__(self, info: VideoInfo, size: int):
        scale = scale_argument(info.width, info.height, size) + ":flags=bicubic"
        rgb = _is_8bit_rgb(info.pix_fmt)
        fix = _RGB_FIX if rgb else None if info.full_range else _CHROMA_FIX.get(info.pix_fmt)
        formats = list(fix) if fix else [JPEG_PIXEL_FORMATS]
        transposed = any(name == "transpose" for name, _ in info.rotation)
        # Unscaled RGB takes the CLI's luma from 16 bits too; scaled, the direct luma is closer.
        self._unscaled_rgb_size = (None if not rgb else (info.height, info.width) if transposed
                                   else (info.width, info.height))
        graph = self.graph = av.filter.Graph()
        split = _link(_buffer(graph, info, info.pix_fmt, info.width, info.height, info.aspect),
                      *(graph.add(name, argument) for name, argument in info.rotation),
                      graph.add("split", str(len(formats))))
        self._sinks = []
        for output, pix_fmts in enumerate(formats):
            scaler = graph.add("scale", scale)
            split.link_to(scaler, output, 0)
            self._sinks.append(_link(scaler, graph.add("format", pix_fmts=pix_fmts),
                                     graph.add("buffersink")))
        graph.configure()

    def push(self, frame) -> list:
        """The scaled frames out so far, after `frame` (None: end of stream). Pts are kept."""
        self.graph.vpush(frame)
        frames = _pull_all(self._sinks[0])
        if len(self._sinks) == 1:
            return frames
        for scaled, limited16 in zip(frames, _pull_all(self._sinks[1]), strict=True):
            scaled.make_writable()
            first = 0 if (scaled.width, scaled.height) == self._unscaled_rgb_size else 1
            planes = zip(scaled.planes[first:3], limited16.planes[first:3])
            for index, (plane, plane16) in enumerate(planes, first):
                target = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
                values = np.frombuffer(plane16, "<u2").reshape(plane16.height, -1)[:, :plane16.width]
                to_full_range = luma_to_full_range if index == 0 else chroma_to_full_range
                target[:, :plane.width] = to_full_range(values)
        return frames


class _Interpolator:
    """`minterpolate=fps`: motion-compensated frames at `fps`, on the scaled frames."""

    def __init__(self, info: VideoInfo, first, fps: float):
        graph = self.graph = av.filter.Graph()
        aspect = info.scaled_aspect(first.width, first.height)
        self._sink = _link(_buffer(graph, info, first.format.name, first.width, first.height, aspect),
                           graph.add("minterpolate", fps=format(fps, "g")),
                           graph.add("buffersink"))
        graph.configure()

    def push(self, frame) -> list:
        self.graph.vpush(frame)
        return _pull_all(self._sink)


class _MjpegEncoder:
    """libavcodec's mjpeg encoder as the CLI opens it: defaults, time base 1/rate, 1 thread."""

    def __init__(self, first, rate: Fraction, aspect: Fraction):
        self.context = av.CodecContext.create("mjpeg", "w")
        self.context.width, self.context.height = first.width, first.height
        self.context.pix_fmt = first.format.name
        self.context.time_base, self.context.framerate = 1 / rate, rate
        self.context.sample_aspect_ratio = aspect
        self.context.thread_count = 1

    def encode(self, frame, index: int) -> list[bytes]:
        frame.pts, frame.time_base = index, self.context.time_base
        frame.pict_type = av.video.frame.PictureType.NONE   # the decoder's type is no request
        return [bytes(packet) for packet in self.context.encode(frame)]

    def flush(self) -> list[bytes]:
        return [bytes(packet) for packet in self.context.encode(None)]


class _PillowEncoder:
    """Pillow's JPEG at a fixed quality, from the same Y, Cb, Cr planes (no RGB round trip)."""

    def __init__(self, quality: int):
        self.quality = quality

    def encode(self, frame, index: int) -> list[bytes]:
        subsampling, (rows, columns) = _SUBSAMPLING[frame.format.name]
        planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width]
                  for p in frame.planes]
        # Chroma repeated to full size: libjpeg's averaging subsampler gives it back as is.
        full = [planes[0]] + [np.repeat(np.repeat(c, rows, 0), columns, 1)[:frame.height, :frame.width]
                              for c in planes[1:]]
        image = Image.merge("YCbCr", [Image.fromarray(np.ascontiguousarray(p)) for p in full])
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=self.quality, subsampling=subsampling)
        return [buffer.getvalue()]

    def flush(self) -> list[bytes]:
        return []


class JpegFrames:
    """Collects the JPEG frames of one video stream, as the original's ffmpeg command writes them.

    Feed the stream's decoded frames in presentation order with `push`, then call `finish`.
    size: the `scale` target (height if the video is wider than high, else width).
    fps: `minterpolate` to this rate, or None for the stream's own rate.
    jpeg_quality: None for the original's mjpeg encoding, else Pillow's JPEG at this quality.
    """

    def __init__(self, stream, size: int, fps: float | None = None,
                 jpeg_quality: int | None = None):
        container_start = stream.container.start_time or 0
        self._shift = -rescale(container_start, _MICROSECOND / stream.time_base)
        self._stream, self._size, self._fps = stream, size, fps
        self._encoder = None if jpeg_quality is None else _PillowEncoder(jpeg_quality)
        self._info: VideoInfo | None = None
        self._scaler: _Scaler | None = None
        self._interpolator: _Interpolator | None = None
        self._rate: Fraction | None = None
        self._sync = ConstantRate(starts_at_first_frame=len(stream.container.streams) == 1)
        self._previous = None
        self.jpegs: list[bytes] = []

    def push(self, frame) -> None:
        """Add the next decoded frame."""
        pts = frame.pts if frame.pts is not None else frame.dts
        frame.pts = None if pts is None else pts + self._shift
        frame.time_base = self._stream.time_base
        if self._scaler is None:
            self._info = self._describe(frame)
            self._scaler = _Scaler(self._info, self._size)
        self._scaled(self._scaler.push(frame))

    def finish(self) -> list[bytes]:
        """The JPEG bytes of every output frame, in order."""
        if self._scaler is not None:
            self._scaled(self._scaler.push(None))
            if self._interpolator is not None:
                self._write_all(self._interpolator.push(None))
            for _ in range(self._sync.final_copies()):
                self._encode(self._previous)
        if self._encoder is not None:
            self.jpegs.extend(self._encoder.flush())
        return self.jpegs

    def _describe(self, frame) -> VideoInfo:
        stream = self._stream
        rate = stream.guessed_rate
        matrix = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
        rotation = autorotate_filters(None if matrix is None else
                                      tuple(np.frombuffer(bytes(matrix), "<i4").tolist()))
        return VideoInfo(frame.width, frame.height, frame.format.name,
                         frame.format.name.startswith("yuvj") or frame.color_range == _FULL_RANGE,
                         stream.time_base, rate if rate and rate > 0 else _DEFAULT_RATE,
                         stream.sample_aspect_ratio or Fraction(0, 1), tuple(rotation))

    def _scaled(self, frames: list) -> None:
        if self._fps is None:
            self._write_all(frames)
            return
        for frame in frames:
            if self._interpolator is None:
                self._interpolator = _Interpolator(self._info, frame, self._fps)
            self._write_all(self._interpolator.push(frame))

    def _write_all(self, frames: list) -> None:
        for frame in frames:
            if self._rate is None:
                # minterpolate's output time base is 1/fps; scale keeps the stream's rate.
                self._rate = self._info.rate if self._fps is None else 1 / frame.time_base
            # A frame without any timestamp takes the next slot.
            position = (float(self._sync.next_index) if frame.pts is None
                        else frame_position(frame.pts, frame.time_base, self._rate))
            n, n_previous = self._sync.copies(position)
            for i in range(n):
                previous = i < n_previous and self._previous is not None
                self._encode(self._previous if previous else frame)
            self._previous = frame

    def _encode(self, frame) -> None:
        if self._encoder is None:
            aspect = self._info.scaled_aspect(frame.width, frame.height)
            self._encoder = _MjpegEncoder(frame, self._rate, aspect)
        self.jpegs.extend(self._encoder.encode(frame, len(self.jpegs)))
