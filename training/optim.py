"""One SGD per module group (student, each head), the scheduler on the student only (SPEC §4)."""
import torch
from torch import nn


def make_sgd(module: nn.Module, opt, fused: bool) -> torch.optim.SGD:
    return torch.optim.SGD(module.parameters(), lr=opt.learning_rate, momentum=opt.momentum,
                           dampening=0.0 if opt.nesterov else opt.dampening,
                           weight_decay=opt.weight_decay, nesterov=opt.nesterov,
                           fused=fused or None)


def make_optimizers(student: nn.Module, heads: nn.ModuleDict, opt,
                    fused: bool = False) -> dict[str, torch.optim.SGD]:
    """{'student': SGD, <teacher name>: SGD, ...} with identical settings."""
    optimizers = {"student": make_sgd(student, opt, fused)}
    for name, head in heads.items():
        optimizers[name] = make_sgd(head, opt, fused)
    return optimizers


def make_scheduler(student_optimizer: torch.optim.SGD, opt) -> torch.optim.lr_scheduler.MultiStepLR:
    """MultiStepLR(γ 0.1) on the student's optimizer; the heads keep their learning rate."""
    return torch.optim.lr_scheduler.MultiStepLR(student_optimizer, milestones=opt.multistep_milestones, gamma=0.1)
