"""Temporal sampling (SPEC §4) against the original 3D-ResNets code and hand-computed lists."""
import math

import pytest
import torch

from datasets.temporal import (clip_at, even_starts, frame_list, loop_pad, random_start,
                               window_starts)


def original_loop_padding(frame_indices, size):
    # Transcription of 3D-ResNets LoopPadding: appends while iterating over the same list.
    out = list(frame_indices)
    for index in out:
        if len(out) >= size:
            break
        out.append(index)
    return out


def original_even_crop(frame_indices, size, n_samples):
    # Transcription of 3D-ResNets TemporalEvenCrop.
    n_frames = len(frame_indices)
    stride = max(1, math.ceil((n_frames - 1 - size) / (n_samples - 1)))
    out = []
    for begin_index in frame_indices[::stride]:
        if len(out) >= n_samples:
            break
        end_index = min(frame_indices[-1] + 1, begin_index + size)
        sample = list(range(begin_index, end_index))
        if len(sample) < size:
            out.append(original_loop_padding(sample, size))
            break
        out.append(sample)
    return out


def original_sliding_window(frame_indices, size, stride):
    # Transcription of 3D-ResNets SlidingWindow.
    out = []
    for begin_index in frame_indices[::stride]:
        end_index = min(frame_indices[-1] + 1, begin_index + size)
        sample = list(range(begin_index, end_index))
        if len(sample) < size:
            out.append(original_loop_padding(sample, size))
            break
        out.append(sample)
    return out


def test_loop_padding_repeats_from_the_start():
    assert loop_pad([5, 6, 7], 8) == [5, 6, 7, 5, 6, 7, 5, 6]
    assert loop_pad([4], 3) == [4, 4, 4]
    assert loop_pad(list(range(1, 17)), 16) == list(range(1, 17))
    for n in range(1, 20):
        assert loop_pad(list(range(1, n + 1)), 16) == original_loop_padding(range(1, n + 1), 16)


def test_inference_windows_hand_computed():
    expected = {
        1: [[1] * 16],
        15: [list(range(1, 16)) + [1]],
        16: [list(range(1, 17))],
        17: [list(range(1, 17)), [17] * 16],
        33: [list(range(1, 17)), list(range(17, 33)), [33] * 16],
    }
    for n, clips in expected.items():
        frames = frame_list((1, n + 1))
        got = [clip_at(frames, s, 16) for s in window_starts(n, 16, 16)]
        assert got == clips, n


@pytest.mark.parametrize("stride", [16, 8, 5])
def test_inference_windows_match_original(stride):
    for n in range(1, 70):
        frames = frame_list((3, n + 3))
        got = [clip_at(frames, s, 16) for s in window_starts(n, 16, stride)]
        assert got == original_sliding_window(frames, 16, stride), (n, stride)


def test_even_crop_hand_computed():
    # n=33: stride ceil((33-1-16)/2) = 8 → starts 1, 9, 17, all full length.
    frames = frame_list((1, 34))
    assert [clip_at(frames, s, 16) for s in even_starts(33, 16, 3)] == [
        list(range(1, 17)), list(range(9, 25)), list(range(17, 33))]
    # n=100: stride ceil(83/2) = 42 → starts 1, 43, 85 (85..100 is exactly 16 frames).
    assert [s + 1 for s in even_starts(100, 16, 3)] == [1, 43, 85]
    # n=17: stride 1 → starts 1, 2, 3; the third clip runs out and is loop padded.
    frames = frame_list((1, 18))
    assert [clip_at(frames, s, 16) for s in even_starts(17, 16, 3)] == [
        list(range(1, 17)), list(range(2, 18)), list(range(3, 18)) + [3]]
    # Videos no longer than T: a single loop-padded clip (n=16 also yields a second,
    # padded clip starting at frame 2, as the original does).
    assert even_starts(10, 16, 3) == [0]
    assert even_starts(16, 16, 3) == [0, 1]


def test_even_crop_matches_original():
    for n_samples in (2, 3, 5):
        for n in range(1, 120):
            frames = frame_list((7, n + 7))
            got = [clip_at(frames, s, 16) for s in even_starts(n, 16, n_samples)]
            assert got == original_even_crop(frames, 16, n_samples), (n, n_samples)


def test_even_crop_single_sample_is_first_clip():
    assert even_starts(50, 16, 1) == [0]


def original_random_crop_starts(n, size):
    # The starts 3D-ResNets / CCL TemporalRandomCrop can draw:
    # rand_end = max(0, len(frame_indices) - size - 1); random.randint(0, rand_end).
    return list(range(0, max(0, n - size - 1) + 1))


def test_random_start_is_uniform_over_the_original_starts():
    torch.manual_seed(0)
    n, size, draws = 20, 16, 5000
    starts = original_random_crop_starts(n, size)
    assert starts == [0, 1, 2, 3]  # not 4: the original never starts at n - size
    counts = torch.bincount(torch.tensor([random_start(n, size) for _ in range(draws)]),
                            minlength=len(starts))
    assert len(counts) == len(starts)  # no start outside the original's range
    expected = draws / len(starts)
    assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all(), counts


@pytest.mark.parametrize("n", [1, 10, 15, 16, 17, 18, 40])
def test_random_start_draws_every_start_of_the_original_and_no_other(n):
    g = torch.Generator().manual_seed(n)
    drawn = {random_start(n, 16, g) for _ in range(400)}
    assert drawn == set(original_random_crop_starts(n, 16)), n


def test_temporal_stride_takes_every_kth_frame():
    frames = frame_list((1, 34), t_stride=2)
    assert frames == list(range(1, 34, 2))
    assert clip_at(frames, 10, 16) == [21, 23, 25, 27, 29, 31, 33, 21, 23, 25, 27, 29, 31,
                                       33, 21, 23]
