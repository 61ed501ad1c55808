"""The options → dataset mapping, shared by training and evaluation."""
import logging
from pathlib import Path

from datasets import VideoDataset
from datasets.audio import mixed_dim_error
from errors import UserError

log = logging.getLogger("ccl")


def make_dataset(opt, subset: str, mode: str) -> VideoDataset:
    """The dataset of one subset; what is wrong with the data files (missing videos under
    --strict_data, broken audio features) is a UserError, raised before any model exists.
    The audio feature cache goes to `<result_path>/.ccl_cache` when the audio folder is
    read-only."""
    return VideoDataset(opt.video_path, opt.annotation_path, subset, mode=mode,
                        sample_duration=opt.sample_duration, sample_size=opt.sample_size,
                        audio_path=opt.audio_path if opt.use_audio else None,
                        n_val_clips=opt.n_val_samples, inference_stride=opt.inference_stride,
                        t_stride=opt.sample_t_stride,
                        crop_scale=(opt.train_crop_min_scale, 1.0),
                        crop_ratio=(opt.train_crop_min_ratio, 1.0 / opt.train_crop_min_ratio),
                        hflip=not opt.no_hflip, strict=opt.strict_data,
                        reduced_decode=opt.eval_reduced_decode, encoded=opt.gpu_decode,
                        audio_cache_fallback=Path(opt.result_path) / ".ccl_cache")


# Above this share of training videos without an audio feature, a run warns: UCF51 split 1
# lacks 8 of 4,901, which is normal; a wrong folder level loses all of them.
MAX_SHARE_WITHOUT_AUDIO = 0.10


def check_audio_coverage(train_set: VideoDataset, video_path, audio_path) -> None:
    """Under --use_audio: no training video with an audio feature is a UserError (the run
    would silently be the baseline); more than 10% without one, a warning with the count
    and the folder searched; otherwise an info line."""
    missing, total = train_set.n_no_audio, train_set.n_videos
    first = Path(audio_path) / Path(train_set.hdf5_files[0]).relative_to(video_path).with_suffix(".npy")
    if missing == total:
        raise UserError(f"--use_audio: none of the {total} training videos has an audio feature under "
                        f"--audio_path {audio_path} (the first would be {first}); point --audio_path at "
                        f"the folder that holds the <label>/<video>.npy files")
    share = missing / total
    level = logging.WARNING if share > MAX_SHARE_WITHOUT_AUDIO else logging.INFO
    log.log(level, "%d of %d training videos (%.1f%%) have no audio feature under %s; they train "
                   "without the audio terms", missing, total, 100 * share, audio_path)


def audio_dim(datasets: list[VideoDataset]) -> int:
    """D of the run's audio features (SPEC §1): every dataset's files must have the same D
    (a UserError naming a file of each, with both shapes). 512 when no file exists."""
    with_audio = [d.audio for d in datasets if d.audio.reference is not None]
    for bank in with_audio[1:]:
        if bank.dim != with_audio[0].dim:
            raise mixed_dim_error(*bank.reference, *with_audio[0].reference)
    return with_audio[0].dim if with_audio else datasets[0].audio_dim
