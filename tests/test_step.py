"""The pieces of training.step.train_step: the buffer snapshot and the finiteness check."""
import math

import pytest
import torch
from torch import nn

from training.step import BufferSnapshot, gradients_finite


def test_a_restored_snapshot_gives_back_every_buffer_bit_for_bit():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv3d(3, 4, 1), nn.BatchNorm3d(4), nn.BatchNorm3d(4))
    module.train()
    module(torch.randn(2, 3, 2, 3, 3))
    before = {name: buffer.clone() for name, buffer in module.named_buffers()}
    assert {b.dtype for b in before.values()} == {torch.float32, torch.int64}
    snapshot = BufferSnapshot(module)
    module(torch.full((2, 3, 2, 3, 3), math.nan))   # a step that poisons the statistics
    assert torch.isnan(module[1].running_mean).all()
    assert int(module[1].num_batches_tracked) == 2
    snapshot.restore()
    for name, buffer in module.named_buffers():
        assert torch.equal(buffer, before[name]), name


def test_the_snapshot_is_a_copy_not_a_view():
    module = nn.BatchNorm1d(3)
    snapshot = BufferSnapshot(module)
    module.running_var.fill_(7.0)
    snapshot.restore()
    assert torch.equal(module.running_var, torch.ones(3))


@pytest.mark.parametrize("bad, expected", [(None, True), (math.nan, False), (math.inf, False),
                                           (-math.inf, False), (1e38, True)])
def test_gradients_are_finite_unless_one_entry_is_not(bad, expected):
    parameters = [nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(1))]
    parameters[0].grad = torch.tensor([1.0, -2.0, 3.0])
    parameters[1].grad = torch.tensor([[1e38, 1e38], [1e38, 1e38]])   # huge but finite: no overflow
    if bad is not None:
        parameters[1].grad[1, 0] = bad
    assert bool(gradients_finite(parameters)) is expected


def test_no_gradient_at_all_is_finite():
    assert bool(gradients_finite([nn.Parameter(torch.zeros(2))]))
