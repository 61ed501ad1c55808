"""The options → dataset mapping, shared by training and evaluation."""
from datasets import VideoDataset
from training.inputs import UserError


def make_dataset(opt, subset: str, mode: str) -> VideoDataset:
    """The dataset of one subset; what is wrong with the data files (missing videos under
    --strict_data, broken audio features) is a UserError, raised before any model exists."""
    try:
        return VideoDataset(opt.video_path, opt.annotation_path, subset, mode=mode,
                            sample_duration=opt.sample_duration, sample_size=opt.sample_size,
                            audio_path=opt.audio_path if opt.use_audio else None,
                            n_val_clips=opt.n_val_samples, inference_stride=opt.inference_stride,
                            t_stride=opt.sample_t_stride,
                            crop_scale=(opt.train_crop_min_scale, 1.0),
                            crop_ratio=(opt.train_crop_min_ratio, 1.0 / opt.train_crop_min_ratio),
                            hflip=not opt.no_hflip, strict=opt.strict_data,
                            reduced_decode=opt.eval_reduced_decode, encoded=opt.gpu_decode)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
