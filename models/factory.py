"""`build_student`: the one place that maps `--model/--model_depth/--pretrain_path` to a
student network (DESIGN: `student(clip) -> (logits (B, C), features (B, 512))`)."""
import logging
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from torch import Tensor, nn

from errors import UserError, require_file
from models.checkpoint_file import CHECKPOINT_FILE, read_checkpoint_file
from models.r21d import r21d, r21d_std
from models.video_resnets import ARCHITECTURES, video_resnet_student

# --model name → builder(depth, n_classes); the keys are the option's choices.
STUDENTS: dict[str, Callable[[int, int], nn.Module]] = {
    "r21d": r21d,
    "r21d_std": r21d_std,
    **{name: partial(video_resnet_student, name) for name in ARCHITECTURES},
}
STUDENT_NAMES = tuple(STUDENTS)
MODULE_PREFIX = "module."

log = logging.getLogger("ccl")


def strip_module_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop the `module.` that DataParallel / DistributedDataParallel put before every key of
    a wrapped model's state dict (the original release unwrapped before saving, but files
    saved from a wrapped model circulate); other keys are kept as they are."""
    return {k.removeprefix(MODULE_PREFIX): v for k, v in state_dict.items()}


def read_state_dict(path: str | Path, option: str = "checkpoint") -> dict[str, Tensor]:
    """Model weights from a checkpoint file: a bare state dict (torchvision) or the original
    release's `{'epoch', 'arch', 'state_dict', 'optimizer', 'scheduler'}`, `module.` stripped.

    option: how the user named the file (e.g. `--pretrain_path`), for the error messages.
    Read without running code (`models.checkpoint_file`); CheckpointFileError (a UserError)
    when the file is unreadable or refused.
    """
    path = Path(path)
    require_file(path, option, CHECKPOINT_FILE, fix=" (give a local checkpoint file; nothing is downloaded)")
    checkpoint = read_checkpoint_file(path, option)
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping):
        raise UserError(f"{option} {path} holds no state dict")
    return strip_module_prefix(checkpoint)


def load_pretrained(model: nn.Module, path: str | Path) -> nn.Module:
    """Load `path` into `model` strictly, except for the classifier (`model.HEAD`): when the
    checkpoint's class count differs (e.g. Kinetics-400 → UCF51), the head keeps its fresh
    initialisation. Any other missing or unexpected key is an error."""
    state = read_state_dict(path, "--pretrain_path")
    own = model.state_dict()
    head = model.HEAD + "."
    head_keys = [k for k in own if k.startswith(head)]
    fresh_head = any(k in state and state[k].shape != own[k].shape for k in head_keys)
    if fresh_head:
        state = {k: v for k, v in state.items() if not k.startswith(head)}
    reshaped = [k for k in state if k in own and state[k].shape != own[k].shape]
    missing = [k for k in own if k not in state and not k.startswith(head)]
    unexpected = [k for k in state if k not in own]
    if reshaped or missing or unexpected:
        raise UserError(f"--pretrain_path {path} does not match the --model architecture "
                        f"(shape differs {reshaped[:3]}, missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    model.load_state_dict(state, strict=False)
    log.info("loaded --pretrain_path %s: %s", path,
             f"every weight but the classifier ({model.HEAD}), which keeps its initialisation for the new "
             f"class count" if fresh_head else "every weight, the classifier's included")
    return model


def build_student(model: str, model_depth: int, n_classes: int,
                  pretrain_path: str | None = None) -> nn.Module:
    """The student of SPEC §2 named `model`, with an n_classes head.

    `r21d` is the original release's R(2+1)D (depth 18 = one block per stage, the paper's
    network); `r21d_std` the standard layout; `r3d_18`, `mc3_18`, `r2plus1d_18` are
    torchvision's. pretrain_path: optional local checkpoint of the same architecture.
    """
    if model not in STUDENTS:
        raise UserError(f"unknown --model {model!r}; choices: {', '.join(STUDENT_NAMES)}")
    student = STUDENTS[model](model_depth, n_classes)
    if pretrain_path is not None:
        load_pretrained(student, pretrain_path)
    return student
