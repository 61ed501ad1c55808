"""The video dataset: training clips, validation clips (several per video), inference windows."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from errors import RunStopped

from .annotation import load_annotation, resolve_samples
from .audio import AudioBank
from .audio_cache import cached_audio_bank
from .encoded import EncodedItem
from .hdf5_clip import BadSampleError, decode_frames, read_encoded
from .spatial import ClipCenterCrop, ClipRandomResizedCrop, ClipTransform
from .temporal import clip_at, even_starts, frame_list, random_start, window_starts

Mode = Literal["train", "val", "inference"]


class UnreadableDataError(RunStopped):
    """Every try at finding a readable replacement for a sample failed, or an inference
    window, which nothing can replace, is unreadable."""


def unreadable_at_inference(record: str) -> UnreadableDataError:
    """The error for an inference window that cannot be read or decoded (`record`:
    `"<file>: <reason>"`): another video's window would enter the video's average, or the
    video would get no prediction."""
    return UnreadableDataError(f"unreadable video at inference: {record}; every window of every video is "
                               f"predicted, so re-convert the file or remove the video from the "
                               f"annotation, then rerun with --no_train --inference --resume_path latest")


class VideoDataset(Dataset):
    """Clips of the videos of one annotation subset, as DESIGN.md dataset items.

    mode "train": one item per video, a random T-frame crop (loop padded) and a clip-level
        RandomResizedCrop + flip at every load.
    mode "val": `n_val_clips` evenly spaced clips per video (TemporalEvenCrop), each an item;
        resize + center crop.
    mode "inference": non-overlapping windows (stride `inference_stride`, last loop padded),
        each an item; resize + center crop.
    `t_stride` takes every k-th frame before any of the above (--sample_t_stride).
    `reduced_decode` lets val/inference decode JPEGs at reduced scale (see ClipCenterCrop).
    `encoded`: items carry the clip's undecoded frames and its drawn spatial parameters
    (`encoded`, an EncodedItem) instead of `clip`, for decoding in the training process
    (`device_decode`); every random draw is the same as for the decoded clip.

    Every audio feature file is checked here, before training rather than inside a loader
    worker: a broken one, or one whose dimension D differs from the others', is a UserError
    naming it. The features are served from the consolidated cache of `datasets.audio_cache`
    (built once in `<audio_path>/.ccl_cache`, or in `audio_cache_fallback` when that folder
    cannot be written), memory-mapped and shared by loader workers.

    Items are looked up by index, or by `(index, seed)` (the keys of SeededSampler, used for
    training): the item's random draws (temporal start, crop, flip, audio row of a (T, D)
    feature, replacement of an unreadable sample) then come from a generator seeded with `seed`, so they do not depend
    on which process loads it. With a plain index they come from the global torch RNG. An
    unreadable sample is replaced by a random other item (at most `max_retries` tries); the
    item's `bad` list says what was replaced and why. An inference window is not replaced
    (another video's window would enter the video's average, or the video would get no
    prediction): an unreadable one is an UnreadableDataError naming the file.

    Attributes: `labels` class names; per video `video_ids`, `video_labels` (-1 unlabeled),
    `hdf5_files`, `audio_files` (file names as str; None: no audio), `segments`; `audio`
    their features (`AudioBank`) and `audio_dim` their D (512 for the paper's; also when no
    video has audio); `n_videos`; `n_no_audio` videos without an audio feature;
    `item_video_index` (len(self),) the video of each item.
    """

    def __init__(self, video_path: str | Path, annotation_path: str | Path, subset: str,
                 mode: Mode = "train", sample_duration: int = 16, sample_size: int = 112,
                 audio_path: str | Path | None = None, n_val_clips: int = 3,
                 inference_stride: int = 16, t_stride: int = 1,
                 crop_scale: tuple[float, float] = (0.25, 1.0),
                 crop_ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: bool = True,
                 strict: bool = False, max_retries: int = 10, reduced_decode: bool = False,
                 encoded: bool = False, audio_cache_fallback: str | Path | None = None) -> None:
        if mode not in ("train", "val", "inference"):
            raise ValueError(f"mode must be 'train', 'val' or 'inference', got {mode!r}")
        if sample_duration < 1 or t_stride < 1:
            raise ValueError("sample_duration and t_stride must be at least 1")
        if encoded and reduced_decode:
            raise ValueError("reduced-scale decoding happens in the CPU decoder: it cannot be "
                             "combined with encoded items, which are decoded at full size")
        annotation = load_annotation(annotation_path)
        samples = resolve_samples(annotation, subset, video_path, audio_path, strict)
        self.labels = annotation.labels
        self.video_ids = [s.sample_id for s in samples]
        self.video_labels = [s.label for s in samples]
        self.n_videos = len(samples)
        self.n_no_audio = sum(s.audio_path is None for s in samples)
        self.mode = mode
        self.sample_duration = sample_duration
        self.t_stride = t_stride
        self.max_retries = max_retries
        self.encoded = encoded
        self.hdf5_files = [s.hdf5_path for s in samples]
        self.audio_files = [s.audio_path for s in samples]
        self.segments = [s.segment for s in samples]
        if audio_path is None:
            self.audio = AudioBank(self.audio_files)
        else:
            # One cache per (audio path, annotation file, subset): rebuilt in place as files
            # change, never confused with another dataset's in a shared fallback folder.
            key = f"{os.path.abspath(audio_path)}\n{os.path.abspath(annotation_path)}"
            name = f"{subset}-{hashlib.sha1(key.encode()).hexdigest()[:16]}"
            self.audio = cached_audio_bank(self.audio_files, audio_path, name,
                                           audio_cache_fallback)

        self.spatial: ClipTransform
        if mode == "train":
            self.spatial = ClipRandomResizedCrop(sample_size, crop_scale, crop_ratio, hflip)
            self.item_video_index = np.arange(self.n_videos, dtype=np.int64)
            self._item_start = None
        else:
            self.spatial = ClipCenterCrop(sample_size, reduced_decode)
            videos, starts = [], []
            for v, segment in enumerate(self.segments):
                n = len(range(segment[0], segment[1], t_stride))
                if mode == "val":
                    s = even_starts(n, sample_duration, n_val_clips)
                else:
                    s = window_starts(n, sample_duration, inference_stride)
                videos.extend([v] * len(s))
                starts.extend(s)
            self.item_video_index = np.asarray(videos, dtype=np.int64)
            self._item_start = np.asarray(starts, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.item_video_index)

    @property
    def audio_dim(self) -> int:
        return self.audio.dim

    def frame_numbers(self, index: int, generator: torch.Generator | None = None) -> list[int]:
        """The T 1-based frame numbers of item `index` (a fresh random crop in train mode,
        drawn from `generator` or the global torch RNG)."""
        video = int(self.item_video_index[index])
        frames = frame_list(self.segments[video], self.t_stride)
        if self._item_start is None:
            start = random_start(len(frames), self.sample_duration, generator)
        else:
            start = int(self._item_start[index])
        return clip_at(frames, start, self.sample_duration)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """Item of DESIGN.md: clip (3, T, S, S) uint8 (or `encoded`), target, audio (D,),
        audio_weight, video_index, bad. `key`: an index, or (index, seed) (see the class
        docstring)."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        bad: list[str] = []
        for _ in range(self.max_retries + 1):
            try:
                item = self._load(index, generator)
            except BadSampleError as e:
                if self.mode == "inference":
                    raise unreadable_at_inference(str(e)) from None
                bad.append(str(e))
                index = self._other_index(index, generator)
                continue
            item["bad"] = bad
            return item
        raise UnreadableDataError(f"{len(bad)} unreadable samples in a row, the last: {bad[-1]} "
                                  f"(check the HDF5 files under the video path)")

    def _other_index(self, index: int, generator: torch.Generator | None) -> int:
        """A uniformly drawn item other than `index` (itself only when it is the only one)."""
        if len(self) == 1:
            return index
        other = int(torch.randint(0, len(self) - 1, (1,), generator=generator))
        return other + (other >= index)

    def _load(self, index: int, generator: torch.Generator | None) -> dict:
        video = int(self.item_video_index[index])
        clip = read_encoded(self.hdf5_files[video], self.frame_numbers(index, generator))
        # The spatial parameters first: only the part of the frames they keep is decoded.
        plan = self.spatial.plan(*clip.frame_size, generator)
        if self.encoded:
            visual = {"encoded": EncodedItem(clip, plan, self.spatial.size)}
        else:
            frames = self.spatial.finish(decode_frames(clip, plan.box, plan.scale), plan)
            inverse = clip.inverse
            if not torch.equal(inverse, torch.arange(len(inverse))):
                frames = frames[inverse]
            visual = {"clip": frames.permute(1, 0, 2, 3)}
        audio, weight = self.audio.feature(video, generator)
        return {
            **visual,
            "target": torch.tensor(self.video_labels[video], dtype=torch.int64),
            "audio": audio,
            "audio_weight": torch.tensor(weight, dtype=torch.float32),
            "video_index": torch.tensor(video, dtype=torch.int64),
        }
