"""One SGD per module group (student, each head), the scheduler on the student only (SPEC §4)."""
import torch
from torch import nn

from training.config import OptimConfig


def make_sgd(module: nn.Module, config: OptimConfig, fused: bool) -> torch.optim.SGD:
    return torch.optim.SGD(module.parameters(), lr=config.learning_rate, momentum=config.momentum,
                           dampening=0.0 if config.nesterov else config.dampening,
                           weight_decay=config.weight_decay, nesterov=config.nesterov,
                           fused=fused or None)


def make_optimizers(student: nn.Module, heads: nn.ModuleDict, config: OptimConfig,
                    fused: bool = False) -> dict[str, torch.optim.SGD]:
    """{'student': SGD, <teacher name>: SGD, ...} with identical settings."""
    optimizers = {"student": make_sgd(student, config, fused)}
    for name, head in heads.items():
        optimizers[name] = make_sgd(head, config, fused)
    return optimizers


def make_scheduler(student_optimizer: torch.optim.SGD, config: OptimConfig) -> torch.optim.lr_scheduler.MultiStepLR:
    """MultiStepLR(γ 0.1) on the student's optimizer; the heads keep their learning rate."""
    return torch.optim.lr_scheduler.MultiStepLR(student_optimizer, milestones=list(config.milestones), gamma=0.1)
