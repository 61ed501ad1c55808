"""Assemble one run from the options: datasets, student, teachers, optimizers, resume,
wrappers; then train/validate and hand the student to evaluation."""
import contextlib
import logging
from pathlib import Path

import torch
from torch import nn

from datasets import build_loader, normalize_clip
from datasets.device_decode import clip_to_device
from models import build_student, load_image_teacher
from models.image_teacher import FEATURE_DIM, calibrate_batchnorm, teacher_frame_size
from opts import SUBSETS
from evaluation.pipeline import evaluate
from training.checkpoint import load_checkpoint, unwrap
from training.distributed import broadcast_from_main, is_distributed, world_size
from training.data import audio_dim, check_audio_coverage, make_dataset
from training.device import uses_data_parallel
from training.inputs import UserError
from training.logs import write_options
from training.loop import EpochSettings
from training.objective import ccl_objective
from training.optim import make_optimizers, make_scheduler
from training.run_options import check_resume_options, recorded_options
from training.runner import RunState, fit, restore
from training.step import configure_backends, speed_mode
from training.teachers import as_teacher_sees, build_teachers, heads, make_frame_norm

log = logging.getLogger("ccl")


def per_rank(batch_size: int) -> int:
    """This process's share of the global batch (`check_inputs` made sure it divides)."""
    return batch_size // world_size()


def load_resume_checkpoint(opt) -> tuple[dict | None, list[dict]]:
    """The checkpoint of `--resume_path` (None without one) and the option changes the run
    carries on; a training run may resume only the training it was started with
    (`training.run_options`). Raises UserError before anything is built."""
    if not opt.resume_path:
        return None, []
    path = Path(opt.resume_path)
    try:
        checkpoint = load_checkpoint(path)
    except ValueError as e:   # missing, unreadable or refused (it would run code)
        raise UserError(str(e)) from None
    return checkpoint, [] if opt.no_train else check_resume_options(checkpoint, opt, path)


def record_options(opt, result_path: Path, option_changes: list[dict]) -> dict:
    """opts.json for a training run (with the changes a resume was allowed to make);
    eval_opts.json for an evaluation-only one, which leaves the training's opts.json as it is.
    Returns the recorded options."""
    options = recorded_options(opt)
    if opt.no_train:
        write_options(result_path / "eval_opts.json", options)
    else:
        write_options(result_path / "opts.json", {**options, "option_changes": option_changes}
                      if option_changes else options)
    return options


def epoch_settings(opt, device: torch.device, n_train_items: int) -> EpochSettings:
    mode = speed_mode(device, opt.exact)
    max_bad = opt.max_bad_samples if opt.max_bad_samples is not None else max(1, n_train_items // 100)
    return EpochSettings(mean=opt.mean, std=opt.std, sample_duration=opt.sample_duration,
                         loss_weight=opt.loss_weight,
                         autocast_dtype=mode.autocast_dtype, channels_last=mode.channels_last,
                         seed=opt.manual_seed,
                         max_bad_samples=max_bad, max_nonfinite_steps=opt.max_nonfinite_steps,
                         objective=torch.compile(ccl_objective) if opt.compile else ccl_objective)


@contextlib.contextmanager
def weight_file_errors():
    """A weight file the user passed that is missing, unreadable, refused or of another
    architecture (`--pretrain_path`, `--image_teacher_weights`) becomes a UserError; the
    messages name the option and the file."""
    try:
        yield
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None


def wrap_student(student: nn.Module, opt, device: torch.device) -> nn.Module:
    """DDP under torchrun, DataParallel on several visible GPUs (the paper's setup),
    then torch.compile when asked."""
    if is_distributed():
        student = nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None)
    elif uses_data_parallel(device):
        student = nn.DataParallel(student)
    if opt.compile:
        student = torch.compile(student)
    return student


def image_teacher(opt, train_loader, settings: EpochSettings, device: torch.device):
    """The frozen `--image_teacher`; in demo/test mode an untrained one whose BatchNorm
    statistics are calibrated on real training frames so its features stay finite (SPEC §2)."""
    with weight_file_errors():
        network = load_image_teacher(opt.image_teacher_weights, allow_untrained=opt.allow_untrained_teacher,
                                     name=opt.image_teacher,
                                     frame_size=teacher_frame_size(opt.image_size, opt.sample_size))
    if opt.allow_untrained_teacher and train_loader is not None:
        sample = clip_to_device(next(iter(train_loader)), torch.device("cpu"))
        clip = normalize_clip(sample["clip"], settings.mean, settings.std)
        calibrate_batchnorm(network, as_teacher_sees(clip.transpose(1, 2).flatten(0, 1), opt.image_size,
                                                     image_frame_norm(opt)))
    return network.to(device)


def image_frame_norm(opt):
    return make_frame_norm(opt.image_teacher_norm, opt.image_teacher, opt.mean, opt.std)


def run(opt, device: torch.device) -> dict:
    """Train/validate as the options say, then infer/retrieve/report. Returns the last
    validation metrics and any evaluation results."""
    result_path = Path(opt.result_path)
    checkpoint, option_changes = load_resume_checkpoint(opt)
    options = record_options(opt, result_path, option_changes)
    torch.manual_seed(opt.manual_seed)
    batch = per_rank(opt.batch_size)
    if opt.gpu_decode and device.type != "cuda":
        log.warning("--gpu_decode without a CUDA device: the training process decodes every batch on the CPU")
    train_loader = val_loader = None
    if not opt.no_train:
        train_set = make_dataset(opt, SUBSETS["train"], "train")
        train_loader = build_loader(train_set, batch, shuffle=True, n_threads=opt.n_threads,
                                    distributed=is_distributed(), drop_last=False,
                                    seed=opt.manual_seed)
        if opt.use_audio:
            check_audio_coverage(train_set, opt.video_path, opt.audio_path)
    if not opt.no_val:
        val_loader = build_loader(make_dataset(opt, SUBSETS["val"], "val"), batch, shuffle=False,
                                  n_threads=opt.n_threads, distributed=is_distributed())
    datasets = [loader.dataset for loader in (train_loader, val_loader) if loader is not None]
    # One audio D across the subsets, checked before any model is built.
    audio_d = audio_dim(datasets) if opt.use_audio and datasets else FEATURE_DIM
    settings = epoch_settings(opt, device, len(train_loader.dataset) if train_loader else 0)
    configure_backends(device)

    with weight_file_errors():
        student = build_student(opt.model, opt.model_depth, opt.n_classes, opt.pretrain_path).to(device)
    if settings.channels_last:
        student = student.to(memory_format=torch.channels_last_3d)
    network = image_teacher(opt, train_loader, settings, device) if opt.use_image else None
    image_d = network.feature_dim if network is not None else FEATURE_DIM
    if network is not None:
        broadcast_from_main(network)
        if opt.compile:
            network = torch.compile(network)
    teachers = build_teachers(opt.use_audio, opt.use_image, opt.n_classes, network, opt.image_size, device,
                              audio_dim=audio_d, image_dim=image_d,
                              frame_norm=image_frame_norm(opt) if opt.use_image else None)
    # Heads live outside DDP: identical gradients keep them identical only from an identical start.
    broadcast_from_main(heads(teachers))
    optimizers = make_optimizers(student, heads(teachers), opt, fused=device.type == "cuda")
    state = RunState(student, teachers, optimizers, make_scheduler(optimizers["student"], opt),
                     options=options, option_changes=option_changes)
    if checkpoint is not None:
        try:
            restore(state, checkpoint, Path(opt.resume_path), resume_training=not opt.no_train)
        except ValueError as e:   # a checkpoint of another --model / --n_classes, or a bad head file
            raise UserError(str(e)) from None
        log.info("resumed from %s (next epoch %d)", opt.resume_path, state.start_epoch)
        del checkpoint   # its tensors are copied into the run's modules: free them
    arch = f"{opt.model}-{opt.model_depth}"
    state.student = wrap_student(student, opt, device)
    if train_loader is not None or val_loader is not None:
        fit(opt, state, train_loader, val_loader, settings, device, result_path, arch)
    results = {"best_val_acc": state.best_acc}
    if opt.inference or opt.retrieval or opt.report:
        results.update(evaluate(opt, unwrap(state.student), settings, device))
    return results
