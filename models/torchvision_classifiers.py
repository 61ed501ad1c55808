"""torchvision's ImageNet classification models as feature extractors: which ones, where
their classifier is, where torchvision caches their weights, and their preprocessing.

The rule that takes the pooled features of any of them: the classifier is the model's last
leaf module (in registration order), a Linear with one output per ImageNet category of its
weights; replacing it with Identity leaves the features that fed it, of dimension
`in_features`. It holds for every classification model of torchvision 0.29 except the
SqueezeNets, whose classifier is a convolution. Nothing here downloads anything.
"""
from pathlib import Path

import torch
import torchvision
from torch import nn

from errors import UserError

# Their classifier is a 1×1 convolution followed by pooling: no Linear to take features from.
NO_LINEAR_CLASSIFIER = frozenset({"squeezenet1_0", "squeezenet1_1"})
# What torchvision's builders set when they load ImageNet weights: the network that the
# weights were trained as (input transform, auxiliary classifiers whose keys the files hold).
WEIGHTS_BUILD_OPTIONS = {
    "googlenet": {"transform_input": True, "aux_logits": True, "init_weights": False},
    "inception_v3": {"transform_input": True, "aux_logits": True, "init_weights": False},
}


def supported_names() -> list[str]:
    """torchvision's classification models whose pooled features can be taken."""
    names = torchvision.models.list_models(module=torchvision.models)
    return [name for name in names if name not in NO_LINEAR_CLASSIFIER]


def check_name(name: str) -> None:
    """UserError (one line, listing the supported names) unless `name` is supported."""
    if name not in supported_names():
        raise UserError(f"--image_teacher {name!r} is not supported; choose one of torchvision's "
                         f"classification models whose last layer is a Linear classifier: "
                         f"{', '.join(supported_names())}")


def default_weights(name: str) -> torchvision.models.WeightsEnum:
    """The model's default ImageNet weights entry (e.g. `ResNet34_Weights.IMAGENET1K_V1`)."""
    return torchvision.models.get_model_weights(name).DEFAULT


def weights_url(name: str) -> str:
    return default_weights(name).url


def cached_weights_path(name: str) -> Path:
    """Where torchvision caches the default weights file of `name`
    (`<torch.hub.get_dir()>/checkpoints/<file name of the published URL>`)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights_url(name)).name


def imagenet_mean_std(name: str) -> tuple[list[float], list[float]]:
    """The per-channel mean and std the model's default weights were trained with
    (from torchvision's weights transforms)."""
    transform = default_weights(name).transforms()
    return list(transform.mean), list(transform.std)


def build_without_classifier(name: str) -> tuple[nn.Module, str, int]:
    """torchvision's `name` with random weights and its classifier replaced by Identity.

    Returns (model, classifier module path e.g. `fc` / `classifier.1` / `heads.head`,
    feature dimension D = the classifier's `in_features`). UserError when the model's last
    leaf module is not a Linear over its weights' categories.
    """
    check_name(name)
    model = torchvision.models.get_model(name, weights=None, **WEIGHTS_BUILD_OPTIONS.get(name, {}))
    path, last = [(p, m) for p, m in model.named_modules() if not list(m.children())][-1]
    n_categories = len(default_weights(name).meta["categories"])
    if not isinstance(last, nn.Linear) or last.out_features != n_categories:
        raise UserError(f"--image_teacher {name}: its last layer ({path}: {type(last).__name__}) is not "
                         f"a Linear classifier over {n_categories} classes, so its features cannot be taken")
    model.set_submodule(path, nn.Identity())
    return model, path, last.in_features
