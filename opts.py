"""Every command-line option, with the original release's flag names where it had them."""
import argparse
from pathlib import Path

MEAN_STD = {
    "kinetics": ([0.4345, 0.4051, 0.3775], [0.2768, 0.2713, 0.2737]),
    "activitynet": ([0.4477, 0.4209, 0.3906], [0.2767, 0.2695, 0.2714]),
    "0.5": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
}

SUBSETS = {"train": "training", "val": "validation", "test": "testing"}


def non_negative_int(text: str) -> int:
    """argparse type: an integer ≥ 0 (seeds feed NumPy's SeedSequence, which needs that)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
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
    data.add_argument("--n_classes", default=51, type=int)
    data.add_argument("--file_type", default="hdf5", choices=["hdf5"])
    data.add_argument("--strict_data", action="store_true",
                      help="a video listed in the annotation but absent on disk is an error, not a warning")
    data.add_argument("--n_threads", default=4, type=int, help="data loading workers per process")

    clip = p.add_argument_group("clips and augmentation")
    clip.add_argument("--sample_size", default=112, type=int, help="spatial size of the clips")
    clip.add_argument("--sample_duration", default=16, type=int, help="frames per clip")
    clip.add_argument("--sample_t_stride", default=1, type=int)
    clip.add_argument("--train_crop_min_scale", default=0.25, type=float)
    clip.add_argument("--train_crop_min_ratio", default=0.75, type=float)
    clip.add_argument("--no_hflip", action="store_true")
    clip.add_argument("--mean_dataset", default="kinetics", choices=sorted(MEAN_STD))
    clip.add_argument("--no_mean_norm", action="store_true")
    clip.add_argument("--no_std_norm", action="store_true")
    clip.add_argument("--value_scale", default=1, type=int, choices=[1], help="pixel values scaled to [0, 1]")
    clip.add_argument("--eval_reduced_decode", action="store_true",
                      help="validation/inference decode JPEGs at reduced scale when large enough "
                           "(faster; ~1 grey level from the original's preprocessing)")
    clip.add_argument("--n_val_samples", default=3, type=int, help="evenly spaced clips per validation video")

    model = p.add_argument_group("model")
    model.add_argument("--model", default="r21d", choices=["r21d", "r21d_std", "r3d_18", "mc3_18", "r2plus1d_18"],
                       help="student; r21d depth 18 is the original's one-block-per-stage network")
    model.add_argument("--model_depth", default=18, type=int, choices=[18, 34])
    model.add_argument("--pretrain_path", default=None, type=Path, help="local Kinetics checkpoint for the student")

    ccl = p.add_argument_group("distillation")
    ccl.add_argument("--use_audio", action="store_true", help="distill from the audio features (CCL (A))")
    ccl.add_argument("--use_image", action="store_true", help="distill from the ImageNet image teacher (CCL (I))")
    ccl.add_argument("--loss_weight", default=0.5, type=float, help="w of CCL (AI) (SPEC §3)")
    ccl.add_argument("--image_size", default=112, type=int,
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
    optim.add_argument("--learning_rate", default=0.001, type=float)
    optim.add_argument("--momentum", default=0.9, type=float)
    optim.add_argument("--dampening", default=0.0, type=float)
    optim.add_argument("--weight_decay", default=5e-4, type=float)
    optim.add_argument("--nesterov", action="store_true")
    optim.add_argument("--multistep_milestones", default=[150, 225], type=int, nargs="+")
    optim.add_argument("--batch_size", default=16, type=int, help="global batch size (split over processes)")
    optim.add_argument("--n_epochs", default=300, type=int)
    optim.add_argument("--manual_seed", default=1, type=non_negative_int)
    optim.add_argument("--max_nonfinite_steps", default=20, type=int,
                       help="consecutive skipped (non-finite) steps that stop the run")
    optim.add_argument("--max_bad_samples", default=None, type=int,
                       help="unreadable samples per epoch that stop the run (default 1%% of an epoch)")

    run = p.add_argument_group("what to run")
    run.add_argument("--no_train", action="store_true")
    run.add_argument("--no_val", action="store_true")
    run.add_argument("--val_freq", default=1, type=int, help="validate every N epochs")
    run.add_argument("--checkpoint", default=100, type=int, help="save a checkpoint every N epochs")
    run.add_argument("--resume_path", default=None, type=str,
                     help="checkpoint to resume or evaluate ('latest' = newest in --result_path)")
    run.add_argument("--auto_resume", action="store_true", help="same as --resume_path latest when one exists")
    run.add_argument("--allow_changed_options", action="store_true",
                     help="resume a checkpoint with training options other than its own (recorded in "
                          "opts.json's option_changes); without it that is an error")
    run.add_argument("--inference", action="store_true", help="video-level predictions → val.json")
    run.add_argument("--inference_subset", default="val", choices=["train", "val", "test"])
    run.add_argument("--inference_stride", default=16, type=int)
    run.add_argument("--inference_batch_size", default=0, type=int, help="clips per inference batch (0: 4 × batch_size on CUDA, 8 on CPU)")
    run.add_argument("--output_topk", default=5, type=int)
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
                      help="build a synthetic dataset and compare baseline with CCL (AI) on CPU")
    demo.add_argument("--demo_seeds", default=1, type=int)
    demo.add_argument("--demo_epochs", default=8, type=int)
    demo.add_argument("--allow_untrained_teacher", action="store_true",
                      help="(demo/tests) run the image teacher with random, BN-calibrated weights")
    return p


def parse_opts(argv: list[str] | None = None) -> argparse.Namespace:
    opt = build_parser().parse_args(argv)
    if opt.root_path is not None:
        for name in ("video_path", "audio_path", "annotation_path", "result_path", "pretrain_path"):
            value = getattr(opt, name)
            if value is not None and not value.is_absolute():
                setattr(opt, name, opt.root_path / value)
    mean, std = MEAN_STD[opt.mean_dataset]
    opt.mean = [0.0, 0.0, 0.0] if opt.no_mean_norm else mean
    opt.std = [1.0, 1.0, 1.0] if opt.no_std_norm else std
    return opt
