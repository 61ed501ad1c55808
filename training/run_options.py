"""The options a run records (opts.json, checkpoints), and which of them a resume may not
change: a checkpoint continues only the training it was started with."""
import logging
from pathlib import Path

from errors import UserError

log = logging.getLogger("ccl")

# Options that change what is trained, and so may not change when a run is resumed: the data,
# the clips and their augmentation and normalization (`mean`, `std`: as resolved), the model,
# the teachers, the optimisation, the seed and the arithmetic (`--exact`, `--gpu_decode`'s
# decoder). Only these are compared.
TRAINING_OPTIONS = frozenset({
    "video_path", "audio_path", "annotation_path", "n_classes", "sample_size", "sample_duration",
    "sample_t_stride", "train_crop_min_scale", "train_crop_min_ratio", "no_hflip", "mean_dataset",
    "no_mean_norm", "no_std_norm", "value_scale", "mean", "std", "model", "model_depth", "pretrain_path",
    "use_audio", "use_image", "loss_weight", "image_size", "image_teacher", "image_teacher_weights",
    "image_teacher_norm", "allow_untrained_teacher", "learning_rate", "momentum", "dampening",
    "weight_decay", "nesterov", "multistep_milestones", "batch_size", "manual_seed", "exact", "gpu_decode",
})
# Options that leave what is trained unchanged: speed and devices, how often the run
# validates, logs or saves, what is evaluated afterwards, how much bad data it tolerates,
# where results go, which checkpoint it resumes; `n_epochs`, since a run continued for
# longer trains the same first epochs; `dataset` and `file_type`, which name the original's
# loaders (the annotation and the HDF5 files are all this implementation reads). Every option
# is in one of the two sets (tests/test_run_safety.py checks it).
NOT_TRAINING = frozenset({
    "n_threads", "strict_data", "eval_reduced_decode", "n_val_samples", "n_epochs",
    "max_nonfinite_steps", "max_bad_samples", "no_train", "no_val", "val_freq", "checkpoint",
    "resume_path", "auto_resume", "allow_changed_options", "inference", "inference_subset",
    "inference_stride", "inference_batch_size", "output_topk", "retrieval", "report",
    "tensorboard", "no_cuda", "distributed", "compile", "demo", "demo_seeds", "demo_epochs",
    "root_path", "result_path", "dataset", "file_type",
})
# Options that matter only when the teacher they belong to is on (in either run).
ONLY_WITH = {"audio_path": "use_audio", "image_teacher_weights": "use_image",
             "allow_untrained_teacher": "use_image", "image_size": "use_image",
             "image_teacher": "use_image", "image_teacher_norm": "use_image"}


def recorded_options(options: dict) -> dict:
    """Every option as a plain value (paths absolute strings), sorted by name, as opts.json
    and checkpoints hold them."""
    return {name: str(Path(value).absolute()) if isinstance(value, Path) else value
            for name, value in sorted(options.items())}


def changed_training_options(saved: dict, current: dict) -> list[tuple[str, object, object]]:
    """(name, saved value, current value) of every option of TRAINING_OPTIONS that differs.
    Options that only one of the two records (added or removed between versions) are not
    compared."""
    changes = []
    for name in sorted(saved.keys() & current.keys() & TRAINING_OPTIONS):
        needs = ONLY_WITH.get(name)
        if needs and not (saved.get(needs) or current.get(needs)):
            continue
        if saved[name] != current[name]:
            changes.append((name, saved[name], current[name]))
    return changes


def describe_changes(changes: list[tuple[str, object, object]]) -> str:
    """`--sample_size 112 → 160, --use_audio False → True`."""
    return ", ".join(f"--{name} {before} → {after}" for name, before, after in changes)


def check_resume_options(checkpoint: dict, options: dict, allow_changed: bool, path: Path,
                         option: str = "--resume_path") -> list[dict]:
    """The option changes the resumed run carries on (opts.json's `option_changes`).

    A checkpoint that records options is resumed only with the same training options;
    `--allow_changed_options` lets the run continue with the new ones, which are then
    recorded with the epoch they start at. A checkpoint without options (the original
    release's) is resumed with a warning. `options`: the run's (`recorded_options`);
    `option`: the one that named `path` (`--resume_path`, `--auto_resume`).
    Raises UserError listing every difference."""
    earlier = list(checkpoint.get("option_changes", []))
    saved = checkpoint.get("options")
    if saved is None:
        log.warning("%s records no options (a checkpoint of the original release): it is resumed "
                    "with the options given now, which cannot be checked against its training", path)
        return earlier
    changes = changed_training_options(saved, options)
    if not changes:
        return earlier
    if not allow_changed:
        raise UserError(f"{option} {path} was trained with other options: {describe_changes(changes)}; resume it "
                        f"with the options it was trained with (its opts.json), start a new run with "
                        f"another --result_path, or pass --allow_changed_options to continue it with "
                        f"the new ones")
    log.warning("%s continues with changed options (--allow_changed_options): %s", path, describe_changes(changes))
    first_epoch = checkpoint["epoch"] + 1
    return earlier + [{"from_epoch": first_epoch, "option": name, "before": before, "after": after}
                      for name, before, after in changes]
