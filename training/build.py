"""Assemble a run's training from its configs: the checkpoint it resumes, its datasets and
loaders, the student, the teachers, the optimizers, the wrappers (DDP, DataParallel,
torch.compile). Everything a user can get wrong in the data is a UserError raised here,
before the student is built."""
import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from datasets import TRAINING, VALIDATION, build_loader, normalize_clip
from datasets.config import DataConfig, audio_dim, check_audio_coverage, make_dataset
from datasets.device_decode import clip_to_device
from models import build_student, load_image_teacher
from models.config import ModelConfig, TeacherConfig
from models.composition import STUDENT_DIM
from models.image_teacher import calibrate_batchnorm, teacher_frame_size
from training.checkpoint import load_checkpoint
from training.config import OptimConfig, RunConfig
from training.device import uses_data_parallel
from training.distributed import broadcast_from_main, is_distributed, world_size
from training.logs import write_options
from training.optim import make_optimizers, make_scheduler
from training.run_options import check_resume_options
from training.state import TrainingState, restore
from training.precision import configure_backends, speed_mode
from training.teachers import FrameNorm, as_teacher_sees, build_teachers, heads, make_frame_norm

log = logging.getLogger("ccl")


@dataclass
class Training:
    """A run's training as `build` assembles it; a loader is None when the run does not
    train (`--no_train`) or does not validate (`--no_val`)."""
    state: TrainingState
    train_loader: DataLoader | None
    val_loader: DataLoader | None


def build(data: DataConfig, model: ModelConfig, teachers: TeacherConfig, optim: OptimConfig,
          run: RunConfig, device: torch.device) -> Training:
    checkpoint, option_changes = load_resume_checkpoint(run)
    torch.manual_seed(run.seed)
    if data.gpu_decode and device.type != "cuda":
        log.warning("--gpu_decode without a CUDA device: the training process decodes every batch on the CPU")
    train_loader, val_loader, audio_d = build_loaders(data, run)
    configure_backends(device)

    student = build_student(model.name, model.depth, model.n_classes, model.pretrain_path).to(device)
    if speed_mode(device, run.exact).channels_last:
        student = student.to(memory_format=torch.channels_last_3d)
    frame_norm = (make_frame_norm(teachers.image_norm, teachers.image_name, data.mean, data.std)
                  if teachers.image else None)
    network = image_teacher(teachers, frame_norm, train_loader, data, run, device) if teachers.image else None
    teacher_list = build_teachers(model.n_classes, device, audio=teachers.audio, image=network,
                                  image_size=teachers.image_size, audio_dim=audio_d,
                                  image_dim=network_feature_dim(network), frame_norm=frame_norm)
    # Heads live outside DDP: identical gradients keep them identical only from an identical start.
    broadcast_from_main(heads(teacher_list))
    optimizers = make_optimizers(student, heads(teacher_list), optim, fused=device.type == "cuda")
    state = TrainingState(student, teacher_list, optimizers, make_scheduler(optimizers["student"], optim),
                          arch=model.arch, options=run.options, option_changes=option_changes)
    if checkpoint is not None:
        restore(state, checkpoint, run.resume_path, resume_training=run.train, option=run.resume_option)
        if run.train:
            log.info("resumed from %s (next epoch %d)", run.resume_path, state.start_epoch)
        else:
            trained = f" (saved after epoch {checkpoint['epoch']})" if "epoch" in checkpoint else ""
            log.info("evaluating %s%s", run.resume_path, trained)
        del checkpoint   # its tensors are copied into the run's modules: free them
    # Only now that the data, the teachers and the checkpoint have passed their checks: a run
    # stopped by a UserError leaves no opts.json for a training that never started.
    record_options(run, option_changes)
    state.student = wrap_student(student, run.compile, device)
    return Training(state, train_loader, val_loader)


def load_resume_checkpoint(run: RunConfig) -> tuple[dict | None, list[dict]]:
    """The checkpoint of `resume_path` (None without one) and the option changes the run
    carries on; a training run may resume only the training it was started with
    (`training.run_options`). Raises UserError before anything is built."""
    if run.resume_path is None:
        return None, []
    checkpoint = load_checkpoint(run.resume_path, run.resume_option)
    if not run.train:
        return checkpoint, []
    return checkpoint, check_resume_options(checkpoint, run.options, run.allow_changed_options, run.resume_path,
                                            run.resume_option)


def record_options(run: RunConfig, option_changes: list[dict]) -> None:
    """opts.json for a training run (with the changes a resume was allowed to make);
    eval_opts.json for an evaluation-only one, which leaves the training's opts.json as it is."""
    if not run.train:
        write_options(run.result_path / "eval_opts.json", run.options)
    else:
        write_options(run.result_path / "opts.json", {**run.options, "option_changes": option_changes}
                      if option_changes else run.options)


def build_loaders(data: DataConfig, run: RunConfig) -> tuple[DataLoader | None, DataLoader | None, int]:
    """The training loader (shuffled, seeded) and the validation loader, each when the run
    uses it, with this process's share of the global batch, and the audio features' D; the
    audio features checked (coverage, one D across the subsets) before any model is built."""
    batch = data.batch_size // world_size()   # resolve made sure it divides
    train_loader = val_loader = None
    if run.train:
        train_set = make_dataset(data, TRAINING, "train")
        if data.audio_path is not None:
            check_audio_coverage(train_set, data)
        train_loader = build_loader(train_set, batch, shuffle=True, n_threads=data.n_threads,
                                    distributed=is_distributed(), drop_last=False, seed=run.seed)
    if run.validate:
        val_loader = build_loader(make_dataset(data, VALIDATION, "val"), batch, shuffle=False,
                                  n_threads=data.n_threads, distributed=is_distributed())
    datasets = [loader.dataset for loader in (train_loader, val_loader) if loader is not None]
    audio_d = audio_dim(datasets) if data.audio_path is not None and datasets else STUDENT_DIM
    return train_loader, val_loader, audio_d


def image_teacher(teachers: TeacherConfig, frame_norm: FrameNorm | None, train_loader: DataLoader | None,
                  data: DataConfig, run: RunConfig, device: torch.device) -> nn.Module:
    """The frozen `--image_teacher`, identical on every rank and compiled under --compile;
    in demo/test mode an untrained one whose BatchNorm statistics are calibrated on real
    training frames, as it sees them, so its features stay finite (SPEC §2)."""
    network = load_image_teacher(teachers.image_weights, allow_untrained=teachers.allow_untrained,
                                 name=teachers.image_name,
                                 frame_size=teacher_frame_size(teachers.image_size, data.sample_size))
    if teachers.allow_untrained and train_loader is not None:
        calibrate_on_training_frames(network, train_loader, data, teachers.image_size, frame_norm)
    network = network.to(device)
    broadcast_from_main(network)
    return torch.compile(network) if run.compile else network


def calibrate_on_training_frames(network: nn.Module, train_loader: DataLoader, data: DataConfig,
                                 image_size: int, frame_norm: FrameNorm | None) -> None:
    """BatchNorm statistics of an untrained image teacher from every frame of one training
    batch, decoded and normalized on the CPU, as the teacher sees them."""
    sample = clip_to_device(next(iter(train_loader)), torch.device("cpu"))
    clip = normalize_clip(sample["clip"], data.mean, data.std)
    calibrate_batchnorm(network, as_teacher_sees(clip.transpose(1, 2).flatten(0, 1), image_size, frame_norm))


def network_feature_dim(network: nn.Module | None) -> int:
    """D of the image teacher's features (torch.compile keeps the module as `_orig_mod`);
    the paper's 512 without one."""
    if network is None:
        return STUDENT_DIM
    return getattr(network, "_orig_mod", network).feature_dim


def wrap_student(student: nn.Module, compile: bool, device: torch.device) -> nn.Module:
    """DDP under torchrun, DataParallel on several visible GPUs (the paper's setup),
    then torch.compile when asked."""
    if is_distributed():
        student = nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None)
    elif uses_data_parallel(device):
        student = nn.DataParallel(student)
    if compile:
        student = torch.compile(student)
    return student
