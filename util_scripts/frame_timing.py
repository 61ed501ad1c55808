"""When the original's ffmpeg command writes each frame: the CLI's constant frame rate.

The original's `ffmpeg -i VIDEO ... image_%05d.jpg` writes image files, for which the ffmpeg
5.1 CLI keeps a constant frame rate (its `-vsync cfr`, or `vscfr` for an input file with a
single stream): output frame k is the input frame shown at time k / rate, so frames are
repeated over gaps in the timestamps and dropped where they are crowded. The frame count is
therefore not always the number of decoded frames (a video track that starts after the
audio track begins with copies of its first frame, for example). Pure Python, the CLI's
arithmetic (fftools/ffmpeg.c, do_video_out) reproduced step by step.
"""
from fractions import Fraction
from statistics import median

import numpy as np


def rescale(value: int, ratio: Fraction) -> int:
    """value·ratio rounded to the nearest integer, halves away from zero (av_rescale_q)."""
    num, den = abs(value) * ratio.numerator, ratio.denominator
    rounded = (2 * num + den) // (2 * den)
    return rounded if value >= 0 else -rounded


def frame_position(pts: int, time_base: Fraction, rate: Fraction) -> float:
    """A frame's time in output frame periods, as the CLI computes it (its float_pts).

    The CLI rescales to the period 1/rate with up to 16 extra bits, then nudges the value
    2^-17 away from zero (towards -2^-17 at 0), so no time falls exactly half-way.
    """
    period = 1 / rate
    extra_bits = min(max(29 - (period.denominator.bit_length() - 1), 0), 16)
    fine = Fraction(period.numerator, period.denominator << extra_bits)
    position = rescale(pts, time_base / fine) / (1 << extra_bits)
    return position + (1.0 if position > 0 else -1.0) / (1 << 17)


def _lrintf(x: float) -> int:
    """C's lrintf: to single precision, then to the nearest integer, halves to even."""
    return round(float(np.float32(x)))


class ConstantRate:
    """The CLI's constant frame rate for image-file output (ffmpeg 5.1 `-vsync cfr`/`vscfr`).

    Output frame k is shown at time k / rate. `copies` says how often an incoming frame is
    written: 0 (dropped: its slot is taken), 1, or more (it fills a gap; the first
    `n_previous` of the copies are then the previous frame). At the end of the stream the
    CLI writes the last frame `final_copies()` more times.
    starts_at_first_frame: the CLI's choice for an input file with a single stream
        ("vscfr"): output slot 0 is the first frame's own time, while with several streams
        the first frame is repeated from time 0 of the file on.
    """

    def __init__(self, starts_at_first_frame: bool):
        self.starts_at_first_frame = starts_at_first_frame
        self.next_index = 0
        self._recent_previous = [0, 0, 0]

    def copies(self, position: float) -> tuple[int, int]:
        """(n, n_previous) for a frame at `position` (output frame periods)."""
        delta0 = position - self.next_index   # how late the frame is for the next slot
        delta = delta0 + 1.0                  # ... and the end of its one-period duration
        if delta0 < 0 < delta:
            delta0 = 0.0                      # early by less than a period: it takes the slot
        if self.starts_at_first_frame and self.next_index == 0 and delta0 >= 0.5:
            delta, delta0 = 1.0, 0.0
            self.next_index = round(position)  # llrint: halves to even, like Python
        n, n_previous = 1, 0
        if delta < -1.1:
            n = 0
        elif delta > 1.1:
            n = _lrintf(delta)
            if delta0 > 1.1:
                n_previous = _lrintf(delta0 - 0.6)
        n_previous = min(n_previous, n)
        self._recent_previous = [n_previous] + self._recent_previous[:2]
        self.next_index += n
        return n, n_previous

    def final_copies(self) -> int:
        n = int(median(self._recent_previous))
        self.next_index += n
        return n
