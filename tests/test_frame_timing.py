"""The CLI's constant frame rate (util_scripts/frame_timing.py), worked by hand.

The cases follow the rule of ffmpeg 5.1's do_video_out step by step; the golden fixture
(tests/test_jpeg_frames.py) checks the same rule against the CLI's own output.
"""
from fractions import Fraction

from util_scripts.frame_timing import ConstantRate, frame_position, rescale

NUDGE = 2.0 ** -17   # the CLI's offset of every frame time away from zero


def test_rescale_rounds_halves_away_from_zero():
    assert [rescale(v, Fraction(1, 2)) for v in (1, 3, -1, -3, 4)] == [1, 2, -1, -2, 2]
    assert rescale(200_000, Fraction(1, 1_000_000) / Fraction(1, 30000)) == 6000


def test_frame_position_is_in_output_periods_with_the_clis_nudge():
    assert frame_position(0, Fraction(1, 25), Fraction(25)) == -NUDGE
    assert frame_position(3, Fraction(1, 25), Fraction(25)) == 3 + NUDGE
    # 1001/30000 s per frame at 30000/1001 fps, pts in 1/30000 s.
    assert frame_position(2002, Fraction(1, 30000), Fraction(30000, 1001)) == 2 + NUDGE
    # 0.2 s at 25 fps is 5 periods.
    assert frame_position(200, Fraction(1, 1000), Fraction(25)) == 5 + NUDGE


def test_regular_frames_are_written_once():
    sync = ConstantRate(starts_at_first_frame=False)
    assert [sync.copies(k + NUDGE) for k in range(5)] == [(1, 0)] * 5
    assert sync.final_copies() == 0


def test_a_late_first_frame_is_repeated_from_time_zero_with_several_streams():
    # The CLI's rule, worked by hand: the frame is 5 periods late for slot 0, so it fills
    # slots 0-5 (n = lrintf(5 + 1)); "previous" copies need a previous frame (there is none).
    sync = ConstantRate(starts_at_first_frame=False)
    assert sync.copies(5 + NUDGE) == (6, 4)
    assert sync.copies(6 + NUDGE) == (1, 0)


def test_a_single_stream_file_starts_at_its_first_frame():
    sync = ConstantRate(starts_at_first_frame=True)
    assert sync.copies(1 + NUDGE) == (1, 0)     # no copies before it
    assert sync.next_index == 2
    assert sync.copies(2 + NUDGE) == (1, 0)


def test_gaps_repeat_the_previous_then_the_new_frame_and_crowded_frames_are_dropped():
    sync = ConstantRate(starts_at_first_frame=False)
    sync.copies(0.0)
    sync.copies(1.0)
    # Three periods late for slot 2 (a gap): slots 2-5, the first lrintf(3 - 0.6) = 2 of them
    # showing the previous frame.
    assert sync.copies(5.0) == (4, 2)
    # A frame more than 1.1 periods before its slot (slot 6) is dropped.
    assert sync.copies(3.8) == (0, 0)
    assert sync.copies(6.0) == (1, 0)


def test_the_last_frame_is_repeated_as_often_as_the_median_of_the_last_three_gaps():
    sync = ConstantRate(starts_at_first_frame=False)
    for position in (0.0, 3.0, 6.0, 7.0):     # n_previous: 0, 1, 1, 0
        sync.copies(position)
    assert sync.final_copies() == 1
