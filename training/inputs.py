"""Up-front checks of everything a user can get wrong, before any model is built."""
import os
from pathlib import Path

from datasets import Annotation, check_n_classes, classes_without_audio_folder, load_annotation
from models.image_teacher import default_weights_path, missing_weights_message
from models.torchvision_classifiers import check_name
from training.checkpoint import latest_checkpoint


class UserError(Exception):
    """A mistake in the options or the data; main prints it as one line, no traceback."""


def check_inputs(opt) -> None:
    """Validate paths, the annotation and option combinations; resolves `--resume_path
    latest` / `--auto_resume` in place. Raises UserError."""
    if opt.no_train and opt.no_val and not (opt.inference or opt.retrieval):
        raise UserError("nothing to do: --no_train and --no_val without --inference or --retrieval")
    if opt.annotation_path is None:
        raise UserError("--annotation_path is required (see dataset/README.md)")
    if opt.video_path is None or not Path(opt.video_path).is_dir():
        raise UserError(f"--video_path {opt.video_path} does not exist "
                        "(run util_scripts/generate_video_hdf5.py first, see dataset/README.md)")
    try:
        annotation = load_annotation(opt.annotation_path)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    if opt.use_audio:
        check_audio_classes(annotation, opt.audio_path)
    try:
        check_n_classes(annotation, opt.n_classes)
    except ValueError as e:
        raise UserError(str(e)) from None
    if opt.use_image:
        check_image_teacher(opt)
    if opt.pretrain_path is not None and not Path(opt.pretrain_path).is_file():
        raise UserError(f"--pretrain_path {opt.pretrain_path} does not exist")
    if opt.resume_path == "latest" or (opt.auto_resume and opt.resume_path is None):
        found = latest_checkpoint(opt.result_path)
        if found is None and opt.resume_path == "latest":
            raise UserError(f"--resume_path latest: no save_*.pth in {opt.result_path} "
                            f"(check --result_path, or use --auto_resume to start afresh when there is none)")
        opt.resume_path = str(found) if found else None
    if opt.resume_path is not None and not Path(opt.resume_path).is_file():
        raise UserError(f"--resume_path {opt.resume_path} does not exist (pass a save_<epoch>.pth file, "
                        f"or 'latest' for the newest in --result_path)")
    if opt.no_train and opt.resume_path is None and (opt.inference or opt.retrieval):
        raise UserError("--no_train with --inference/--retrieval evaluates a trained model: pass --resume_path")
    if opt.gpu_decode and opt.eval_reduced_decode:
        raise UserError("--eval_reduced_decode decodes at reduced scale on the CPU, --gpu_decode decodes "
                        "full-size frames on the device: drop one of them")
    if opt.batch_size < 1 or opt.n_epochs < 0:
        raise UserError("--batch_size must be ≥ 1 and --n_epochs ≥ 0")
    if opt.distributed:
        check_torchrun(opt.batch_size, os.environ)


def check_image_teacher(opt) -> None:
    """--use_image: a supported --image_teacher whose weights file exists (unless the
    untrained fallback is allowed). Raises UserError."""
    try:
        check_name(opt.image_teacher)
    except ValueError as e:
        raise UserError(str(e)) from None
    if opt.allow_untrained_teacher:
        return
    if opt.image_teacher_weights:
        if not Path(opt.image_teacher_weights).is_file():
            raise UserError(f"--image_teacher_weights {opt.image_teacher_weights} does not exist")
    elif not default_weights_path(opt.image_teacher).is_file():
        raise UserError(missing_weights_message(opt.image_teacher, default_weights_path(opt.image_teacher)))


def check_torchrun(batch_size: int, environment) -> None:
    """--distributed: launched by torchrun (RANK, WORLD_SIZE set), with a global batch that
    splits evenly over its processes. Raises UserError."""
    if "RANK" not in environment or "WORLD_SIZE" not in environment:
        raise UserError("--distributed needs torchrun (RANK and WORLD_SIZE are not set): launch with "
                        "`torchrun --nproc_per_node N main.py --distributed ...`, or drop --distributed")
    processes = int(environment["WORLD_SIZE"])
    if batch_size % processes:
        raise UserError(f"--batch_size {batch_size} is the global batch and must be divisible by the "
                        f"{processes} torchrun processes: pass a multiple of {processes}")


def check_audio_classes(annotation: Annotation, audio_path: str | None) -> None:
    """--use_audio: the audio features exist, and every class of the annotation has its
    folder when they are laid out by class. The original kept only the classes with a
    folder but with the annotation's class ids (UCF101's, up to 100, under --n_classes 51)
    and validated on every class; the paper's setting is the UCF51 annotation, built from
    the audio folders, so a UCF101 annotation is an error that names it."""
    if audio_path is None or not Path(audio_path).is_dir():
        raise UserError(f"--use_audio needs --audio_path with the audio features; {audio_path} does not exist "
                        "(unpack audiocnn14embed512_features.tar.gz, see dataset/README.md)")
    missing = classes_without_audio_folder(annotation, audio_path)
    if missing:
        n = len(annotation.labels)
        raise UserError(f"--use_audio: {len(missing)} of the {n} classes of {annotation.path} have no folder under "
                        f"--audio_path {audio_path} (first: {', '.join(missing[:3])}); the paper trains only the "
                        f"classes with audio: build that annotation with util_scripts/ucf101_json.py --audio_path "
                        f"{audio_path} (it writes ucf51_01.json for split 1) and pass it with "
                        f"--n_classes {n - len(missing)}")
