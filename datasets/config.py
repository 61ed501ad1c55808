"""The data of a run, resolved once from the options (`opts.resolve`), and its datasets."""
import logging
from dataclasses import dataclass
from pathlib import Path

from errors import UserError

from .audio import mixed_dim_error
from .video_dataset import Mode, VideoDataset

log = logging.getLogger("ccl")

# Above this share of training videos without an audio feature, a run warns: UCF51 split 1
# lacks 8 of 4,901, which is normal; a wrong folder level loses all of them.
MAX_SHARE_WITHOUT_AUDIO = 0.10


@dataclass(frozen=True)
class DataConfig:
    """Where a run's files are, how its clips are cut, augmented, normalized and batched.

    audio_path: the audio features (SPEC §1); None when no teacher reads them.
    audio_cache_fallback: where the audio feature cache goes when audio_path is read-only.
    crop_scale, crop_ratio, hflip: the training clips' RandomResizedCrop and flip.
    strict: a video listed in the annotation but absent on disk is an error, not a warning.
    reduced_decode: validation/inference decode JPEGs at reduced scale when large enough.
    gpu_decode: items carry undecoded frames, decoded on the training device.
    mean, std: per channel, of pixel values scaled to [0, 1] (SPEC §4).
    batch_size: the global batch, split over processes; n_threads: loader workers per process.
    """
    video_path: Path
    annotation_path: Path
    audio_path: Path | None
    audio_cache_fallback: Path
    sample_size: int
    sample_duration: int
    t_stride: int
    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    hflip: bool
    n_val_clips: int
    inference_stride: int
    strict: bool
    reduced_decode: bool
    gpu_decode: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    batch_size: int
    n_threads: int


def make_dataset(config: DataConfig, subset: str, mode: Mode) -> VideoDataset:
    """The dataset of one annotation subset; what is wrong with the data files (missing
    videos under `strict`, broken audio features) is a UserError, raised before any model
    exists."""
    return VideoDataset(config.video_path, config.annotation_path, subset, mode=mode,
                        sample_duration=config.sample_duration, sample_size=config.sample_size,
                        audio_path=config.audio_path, n_val_clips=config.n_val_clips,
                        inference_stride=config.inference_stride, t_stride=config.t_stride,
                        crop_scale=config.crop_scale, crop_ratio=config.crop_ratio,
                        hflip=config.hflip, strict=config.strict,
                        reduced_decode=config.reduced_decode, encoded=config.gpu_decode,
                        audio_cache_fallback=config.audio_cache_fallback)


def check_audio_coverage(train_set: VideoDataset, config: DataConfig) -> None:
    """With audio: no training video with an audio feature is a UserError (the run would
    silently be the baseline); more than 10% without one, a warning with the count and the
    folder searched; otherwise an info line."""
    missing, total = train_set.n_no_audio, train_set.n_videos
    relative = Path(train_set.hdf5_files[0]).relative_to(config.video_path).with_suffix(".npy")
    if missing == total:
        raise UserError(f"--use_audio: none of the {total} training videos has an audio feature under "
                        f"--audio_path {config.audio_path} (the first would be "
                        f"{config.audio_path / relative}); point --audio_path at the folder that "
                        f"holds the <label>/<video>.npy files")
    share = missing / total
    level = logging.WARNING if share > MAX_SHARE_WITHOUT_AUDIO else logging.INFO
    log.log(level, "%d of %d training videos (%.1f%%) have no audio feature under %s; they train "
                   "without the audio terms", missing, total, 100 * share, config.audio_path)


def audio_dim(datasets: list[VideoDataset]) -> int:
    """D of the run's audio features (SPEC §1): every dataset's files must have the same D
    (a UserError naming a file of each, with both shapes). 512 when no file exists."""
    with_audio = [d.audio for d in datasets if d.audio.reference is not None]
    for bank in with_audio[1:]:
        if bank.dim != with_audio[0].dim:
            raise mixed_dim_error(*bank.reference, *with_audio[0].reference)
    return with_audio[0].dim if with_audio else datasets[0].audio_dim
