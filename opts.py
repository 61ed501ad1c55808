"""Every command-line option, with the original release's flag names where it had them, and
the one place that reads them: `resolve` checks them and turns them into the configs of a run.
"""
import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from datasets import (TESTING, TRAINING, VALIDATION, check_audio_classes, check_n_classes, load_annotation,
                      require_video_folder)
from datasets.audio_cache import CACHE_FOLDER
from datasets.config import DataConfig
from datasets.transforms import MEAN_STD, normalization_stats
from errors import (ArgumentParser, MissingFileError, UserError, at_least, fraction, non_negative_float,
                    require_file)
from evaluation.config import EvalConfig
from models import STUDENT_NAMES
from models.checkpoint_file import CHECKPOINT_FILE
from models.config import ModelConfig, TeacherConfig
from models.image_teacher import (build_image_teacher, check_frame_size, default_weights_path,
                                  missing_weights_message, teacher_frame_size)
from models.torchvision_classifiers import check_name
from training.checkpoint import RESUMABLE_FILE, latest_checkpoint
from training.config import OptimConfig, RunConfig
from training.distributed import check_torchrun
from training.run_options import recorded_options

# --inference_subset → the annotation's subset names.
SUBSETS = {"train": TRAINING, "val": VALIDATION, "test": TESTING}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="main.py",
        description="CCL: distilling audio-visual knowledge by compositional contrastive learning",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--root_path", default=None, type=Path,
                      help="prefix for relative data/result paths (the original's --root_path)")
    data.add_argument("--video_path", default=None, type=Path, help="root of the per-video HDF5 files")
    data.add_argument("--audio_path", default=None, type=Path, help="root of the per-video audio features (.npy)")
    data.add_argument("--annotation_path", default=None, type=Path, help="annotation JSON (SPEC §1)")
    data.add_argument("--result_path", default=Path("results"), type=Path, help="result directory")
    data.add_argument("--dataset", default="ucf101", choices=["ucf101", "activitynet", "vggsound", "kinetics", "hmdb51"])
    data.add_argument("--n_classes", default=51, type=at_least(1))
    data.add_argument("--file_type", default="hdf5", choices=["hdf5"])
    data.add_argument("--strict_data", action="store_true",
                      help="a video listed in the annotation but absent on disk is an error, not a warning")
    data.add_argument("--n_threads", default=4, type=at_least(0), help="data loading workers per process")

    clip = p.add_argument_group("clips and augmentation")
    clip.add_argument("--sample_size", default=112, type=at_least(1), help="spatial size of the clips")
    clip.add_argument("--sample_duration", default=16, type=at_least(1), help="frames per clip")
    clip.add_argument("--sample_t_stride", default=1, type=at_least(1))
    clip.add_argument("--train_crop_min_scale", default=0.25, type=fraction)
    clip.add_argument("--train_crop_min_ratio", default=0.75, type=fraction)
    clip.add_argument("--no_hflip", action="store_true")
    clip.add_argument("--mean_dataset", default="kinetics", choices=sorted(MEAN_STD))
    clip.add_argument("--no_mean_norm", action="store_true")
    clip.add_argument("--no_std_norm", action="store_true")
    clip.add_argument("--value_scale", default=1, type=int, choices=[1], help="pixel values scaled to [0, 1]")
    clip.add_argument("--eval_reduced_decode", action="store_true",
                      help="validation/inference decode JPEGs at reduced scale when large enough "
                           "(faster; ~1 grey level from the original's preprocessing)")
    clip.add_argument("--n_val_samples", default=3, type=at_least(1), help="evenly spaced clips per validation video")

    model = p.add_argument_group("model")
    model.add_argument("--model", default="r21d", choices=STUDENT_NAMES,
                       help="student; r21d depth 18 is the original's one-block-per-stage network")
    model.add_argument("--model_depth", default=18, type=int, choices=[18, 34])
    model.add_argument("--pretrain_path", default=None, type=Path, help="local Kinetics checkpoint for the student")

    ccl = p.add_argument_group("distillation")
    ccl.add_argument("--use_audio", action="store_true", help="distill from the audio features (CCL (A))")
    ccl.add_argument("--use_image", action="store_true", help="distill from the ImageNet image teacher (CCL (I))")
    ccl.add_argument("--loss_weight", default=0.5, type=non_negative_float, help="w of CCL (AI) (SPEC §3)")
    ccl.add_argument("--image_size", default=112, type=at_least(1),
                     help="frame size the image teacher sees (resized when larger than --sample_size)")
    # Image teachers other than the paper's (README "Other teachers").
    ccl.add_argument("--image_teacher", default="resnet34",
                     help="torchvision classification model used as image teacher, e.g. vit_b_16, "
                          "convnext_tiny, efficientnet_b0 (resnet34: the paper's)")
    ccl.add_argument("--image_teacher_weights", default=None, type=Path,
                     help="the image teacher's ImageNet state dict (default: torchvision's cache file "
                          "of its default weights)")
    ccl.add_argument("--image_teacher_norm", default="clip", choices=["clip", "imagenet"],
                     help="clip: the teacher sees the frame normalized as the clip (the original); "
                          "imagenet: re-normalized to the teacher's ImageNet mean/std")

    optim = p.add_argument_group("optimisation")
    optim.add_argument("--learning_rate", default=0.001, type=non_negative_float)
    optim.add_argument("--momentum", default=0.9, type=non_negative_float)
    optim.add_argument("--dampening", default=0.0, type=non_negative_float)
    optim.add_argument("--weight_decay", default=5e-4, type=non_negative_float)
    optim.add_argument("--nesterov", action="store_true")
    optim.add_argument("--multistep_milestones", default=[150, 225], type=at_least(1), nargs="+")
    optim.add_argument("--batch_size", default=16, type=at_least(1), help="global batch size (split over processes)")
    optim.add_argument("--n_epochs", default=300, type=at_least(0))
    optim.add_argument("--manual_seed", default=1, type=at_least(0))
    optim.add_argument("--max_nonfinite_steps", default=20, type=at_least(1),
                       help="consecutive skipped (non-finite) steps that stop the run")
    optim.add_argument("--max_bad_samples", default=None, type=at_least(0),
                       help="unreadable samples per epoch that stop the run (default 1%% of an epoch)")

    run = p.add_argument_group("what to run")
    run.add_argument("--no_train", action="store_true")
    run.add_argument("--no_val", action="store_true")
    run.add_argument("--val_freq", default=1, type=at_least(1), help="validate every N epochs")
    run.add_argument("--checkpoint", default=100, type=at_least(1), help="save a checkpoint every N epochs")
    run.add_argument("--resume_path", default=None, type=str,
                     help="checkpoint to resume or evaluate ('latest' = newest in --result_path)")
    run.add_argument("--auto_resume", action="store_true", help="same as --resume_path latest when one exists")
    run.add_argument("--allow_changed_options", action="store_true",
                     help="resume a checkpoint with training options other than its own (recorded in "
                          "opts.json's option_changes); without it that is an error")
    run.add_argument("--inference", action="store_true", help="video-level predictions → val.json")
    run.add_argument("--inference_subset", default="val", choices=["train", "val", "test"],
                     help="the annotation's training, validation or testing samples (UCF101's test "
                          "lists are its validation subset), predicted into val.json, train.json or test.json")
    run.add_argument("--inference_stride", default=16, type=at_least(1))
    run.add_argument("--inference_batch_size", default=0, type=at_least(0), help="clips per inference batch (0: 4 × batch_size on CUDA, 8 on CPU)")
    run.add_argument("--output_topk", default=5, type=at_least(1))
    run.add_argument("--retrieval", action="store_true", help="video retrieval: validation queries, training gallery")
    run.add_argument("--report", action="store_true", help="write report.md and figures at the end")
    run.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True)

    device = p.add_argument_group("device and speed")
    device.add_argument("--no_cuda", action="store_true")
    device.add_argument("--distributed", action="store_true", help="DistributedDataParallel under torchrun")
    device.add_argument("--exact", action="store_true",
                        help="fp32 at PyTorch's default precision (the original's), no channels_last: "
                             "results equal the naive multi-backward math")
    device.add_argument("--compile", action="store_true",
                        help="torch.compile the student, the image teacher and the CCL objective "
                             "(the first steps are slow while compiling)")
    device.add_argument("--gpu_decode", action="store_true",
                        help="loader workers read the JPEG bytes and draw the crops; the training process "
                             "decodes each batch on its device (nvJPEG on a GPU, with --no_cuda the CPU) "
                             "and crops, resizes and flips there, for training, validation and inference")

    demo = p.add_argument_group("demo")
    demo.add_argument("--demo", action="store_true",
                      help="build a synthetic dataset and an image teacher, compare baseline with CCL (A), (I), (AI) on CPU")
    demo.add_argument("--demo_seeds", default=1, type=at_least(1))
    demo.add_argument("--demo_epochs", default=12, type=at_least(1))
    demo.add_argument("--allow_untrained_teacher", action="store_true",
                      help="(tests, benchmarks) run the image teacher with random, BN-calibrated weights")
    return p


def parse_opts(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line, relative paths under --root_path when it is given."""
    opt = build_parser().parse_args(argv)
    if opt.root_path is not None:
        for name in ("video_path", "audio_path", "annotation_path", "result_path", "pretrain_path"):
            value = getattr(opt, name)
            if value is not None and not value.is_absolute():
                setattr(opt, name, opt.root_path / value)
    return opt


@dataclass(frozen=True)
class Config:
    """A run, resolved: one config per consumer, defined where it is consumed, and the
    warnings the run logs first (options given that it does not use)."""
    data: DataConfig
    model: ModelConfig
    teachers: TeacherConfig
    optim: OptimConfig
    run: RunConfig
    eval: EvalConfig
    warnings: tuple[str, ...] = ()


def resolve(opt: argparse.Namespace) -> Config:
    """Check everything a user can get wrong, then the options as a run's configs. Raises a
    UserError naming the first mistake, before anything is built."""
    check_inputs(opt)
    resume_path = resume_checkpoint(opt)
    check_combinations(opt)
    return Config(data=data_config(opt), model=model_config(opt), teachers=teacher_config(opt),
                  optim=optim_config(opt), run=run_config(opt, resume_path), eval=eval_config(opt),
                  warnings=unused_options(opt))


IMAGE_TEACHER_OPTIONS = ("image_teacher", "image_teacher_weights", "image_teacher_norm", "image_size")


def unused_options(opt: argparse.Namespace) -> tuple[str, ...]:
    """A warning for the image teacher's options given without --use_image (a baseline or
    CCL (A) run has no image teacher), or none."""
    if opt.use_image:
        return ()
    defaults = build_parser()
    given = [f"--{name} {getattr(opt, name)}" for name in IMAGE_TEACHER_OPTIONS
             if getattr(opt, name) != defaults.get_default(name)]
    if not given:
        return ()
    return (f"{', '.join(given)} ignored: only CCL (I) and CCL (AI) runs (--use_image) have an image "
            f"teacher",)


def data_config(opt: argparse.Namespace) -> DataConfig:
    mean, std = normalization_stats(opt.mean_dataset, opt.no_mean_norm, opt.no_std_norm)
    return DataConfig(
        video_path=opt.video_path, annotation_path=opt.annotation_path,
        audio_path=opt.audio_path if opt.use_audio else None,
        audio_cache_fallback=Path(opt.result_path) / CACHE_FOLDER,
        sample_size=opt.sample_size, sample_duration=opt.sample_duration, t_stride=opt.sample_t_stride,
        crop_scale=(opt.train_crop_min_scale, 1.0),
        crop_ratio=(opt.train_crop_min_ratio, 1.0 / opt.train_crop_min_ratio),
        hflip=not opt.no_hflip, n_val_clips=opt.n_val_samples, inference_stride=opt.inference_stride,
        strict=opt.strict_data, reduced_decode=opt.eval_reduced_decode, gpu_decode=opt.gpu_decode,
        mean=mean, std=std, batch_size=opt.batch_size, n_threads=opt.n_threads)


def model_config(opt: argparse.Namespace) -> ModelConfig:
    return ModelConfig(name=opt.model, depth=opt.model_depth, n_classes=opt.n_classes,
                       pretrain_path=opt.pretrain_path)


def teacher_config(opt: argparse.Namespace) -> TeacherConfig:
    return TeacherConfig(audio=opt.use_audio, image=opt.use_image, image_name=opt.image_teacher,
                         image_size=opt.image_size, image_weights=opt.image_teacher_weights,
                         image_norm=opt.image_teacher_norm, allow_untrained=opt.allow_untrained_teacher)


def optim_config(opt: argparse.Namespace) -> OptimConfig:
    return OptimConfig(learning_rate=opt.learning_rate, momentum=opt.momentum, dampening=opt.dampening,
                       weight_decay=opt.weight_decay, nesterov=opt.nesterov,
                       milestones=tuple(opt.multistep_milestones), loss_weight=opt.loss_weight)


def run_config(opt: argparse.Namespace, resume_path: str | None) -> RunConfig:
    """The run's settings; its `options`, opts.json's content, are every option, the
    normalization and the checkpoint to resume as they are used."""
    mean, std = normalization_stats(opt.mean_dataset, opt.no_mean_norm, opt.no_std_norm)
    options = recorded_options({**vars(opt), "mean": list(mean), "std": list(std), "resume_path": resume_path})
    return RunConfig(
        result_path=Path(opt.result_path), train=not opt.no_train, validate=not opt.no_val,
        n_epochs=opt.n_epochs, val_freq=opt.val_freq, checkpoint_every=opt.checkpoint,
        resume_path=None if resume_path is None else Path(resume_path), resume_option=resume_option(opt),
        allow_changed_options=opt.allow_changed_options, seed=opt.manual_seed,
        max_nonfinite_steps=opt.max_nonfinite_steps, max_bad_samples=opt.max_bad_samples,
        tensorboard=opt.tensorboard, no_cuda=opt.no_cuda, distributed=opt.distributed, exact=opt.exact,
        compile=opt.compile, options=options)


def eval_config(opt: argparse.Namespace) -> EvalConfig:
    return EvalConfig(
        result_path=Path(opt.result_path), inference=opt.inference, subset=SUBSETS[opt.inference_subset],
        predictions_file=f"{opt.inference_subset}.json", output_topk=opt.output_topk,
        retrieval=opt.retrieval, report=opt.report, batch_size=opt.inference_batch_size,
        training_batch_size=opt.batch_size)


def check_inputs(opt: argparse.Namespace) -> None:
    """The paths, the annotation and the weight files the options name (UserError)."""
    if opt.no_train and opt.no_val and not (opt.inference or opt.retrieval):
        raise UserError("nothing to do: --no_train and --no_val without --inference or --retrieval")
    if opt.annotation_path is None:
        raise UserError("--annotation_path is required (see dataset/README.md)")
    require_video_folder(opt.video_path)
    annotation = load_annotation(opt.annotation_path)
    if opt.use_audio:
        check_audio_classes(annotation, opt.audio_path)
    check_n_classes(annotation, opt.n_classes)
    if opt.use_image:
        check_image_teacher(opt)
    if opt.pretrain_path is not None:
        require_file(opt.pretrain_path, "--pretrain_path", CHECKPOINT_FILE)


def check_image_teacher(opt: argparse.Namespace) -> None:
    """--use_image: a supported --image_teacher that takes the frames it will see (ViT's fixed
    224...; checked on the meta device, nothing computed) and whose weights file exists
    (unless the untrained fallback is allowed). Raises UserError."""
    check_name(opt.image_teacher)
    with torch.device("meta"):
        network = build_image_teacher(opt.image_teacher)
    check_frame_size(network, opt.image_teacher, teacher_frame_size(opt.image_size, opt.sample_size))
    if opt.allow_untrained_teacher:
        return
    if opt.image_teacher_weights:
        require_file(opt.image_teacher_weights, "--image_teacher_weights", CHECKPOINT_FILE)
    elif not default_weights_path(opt.image_teacher).is_file():
        raise MissingFileError(missing_weights_message(opt.image_teacher, default_weights_path(opt.image_teacher)))


def resume_checkpoint(opt: argparse.Namespace) -> str | None:
    """The checkpoint to resume or evaluate: --resume_path, `latest` and --auto_resume being
    the newest in --result_path (UserError when there is none to find). A training run
    with --auto_resume and nothing to find starts afresh."""
    resume_path = opt.resume_path
    if resume_path not in (None, "latest"):
        require_file(resume_path, "--resume_path", "a save_<epoch>.pth file",
                     fix=" (pass a save_<epoch>.pth file, or 'latest' for the newest in --result_path)")
    if resume_path == "latest" or (opt.auto_resume and resume_path is None):
        found = latest_checkpoint(opt.result_path)
        if found is None and resume_path == "latest":
            raise UserError(f"--resume_path latest: no {RESUMABLE_FILE} in {opt.result_path} "
                            f"(check --result_path, or use --auto_resume to start afresh when there is none)")
        if found is None and opt.no_train:
            raise UserError(f"--no_train --auto_resume evaluates the newest checkpoint in --result_path "
                            f"{opt.result_path}, and it holds none (no {RESUMABLE_FILE}): check --result_path")
        resume_path = None if found is None else str(found)
    if opt.no_train and resume_path is None and (opt.inference or opt.retrieval):
        raise UserError("--no_train with --inference/--retrieval evaluates a trained model: pass --resume_path")
    return resume_path


def resume_option(opt: argparse.Namespace) -> str:
    """The option that named the checkpoint to resume, for messages: an explicit
    --resume_path wins over --auto_resume."""
    return "--resume_path" if opt.resume_path is not None else "--auto_resume"


def check_combinations(opt: argparse.Namespace) -> None:
    """Options that exclude each other, and what --distributed needs (UserError)."""
    if opt.gpu_decode and opt.eval_reduced_decode:
        raise UserError("--eval_reduced_decode decodes at reduced scale on the CPU, --gpu_decode decodes "
                        "full-size frames on the device: drop one of them")
    if opt.nesterov and opt.momentum == 0:
        raise UserError("--nesterov needs momentum: pass --momentum above 0 (e.g. the default 0.9), or drop --nesterov")
    if opt.distributed:
        check_torchrun(opt.batch_size, os.environ)
