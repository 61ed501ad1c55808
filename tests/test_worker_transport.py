"""Batches sent by loader workers (datasets.worker_transport through datasets.collate): the
same tensors as an in-process collate, reused clip buffers only once nothing can read them."""
import importlib
import io
import os
from multiprocessing.reduction import ForkingPickler

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from datasets.collate import collate
from datasets.worker_transport import ByValue, ClipBuffers


class RandomItems(Dataset):
    """Items shaped like VideoDataset's: clip (3, T, S, S) as a view of (T, S, S, 3) memory."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(index)
        clip = torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8, generator=g)
        return {"clip": clip.permute(3, 0, 1, 2), "target": torch.tensor(index),
                "audio": torch.randn(5, generator=g), "audio_weight": torch.tensor(1.0),
                "bad": [f"item {index}"] if index % 3 == 0 else []}


def expected_batches(n: int, batch_size: int) -> list[dict]:
    """The batches as torch.stack gives them, computed here without the collate module."""
    items = [RandomItems(n)[i] for i in range(n)]
    batches = []
    for start in range(0, n, batch_size):
        chunk = items[start:start + batch_size]
        batch = {key: torch.stack([item[key] for item in chunk])
                 for key in ("clip", "target", "audio", "audio_weight")}
        batch["bad"] = [record for item in chunk for record in item["bad"]]
        batches.append(batch)
    return batches


def worker_loader(n: int, batch_size: int) -> DataLoader:
    return DataLoader(RandomItems(n), batch_size, num_workers=1, collate_fn=collate)


def segment(tensor: torch.Tensor) -> int:
    """Identity (inode) of the shared-memory segment behind a received tensor."""
    fd, _ = tensor.untyped_storage()._share_fd_cpu_()
    return os.fstat(fd).st_ino


def assert_batch_equal(batch: dict, expected: dict) -> None:
    assert batch.keys() == expected.keys()
    for key, value in expected.items():
        if key == "bad":
            assert batch[key] == value
        else:
            assert batch[key].dtype == value.dtype
            assert torch.equal(batch[key], value), key


def test_small_fields_go_by_value_and_arrive_as_tensors():
    for tensor in (torch.tensor([3, -1, 7]), torch.randn(4, 512), torch.tensor([1.0, 0.0])):
        data = io.BytesIO()
        ForkingPickler(data).dump(ByValue(tensor))
        received = ForkingPickler.loads(data.getvalue())
        assert isinstance(received, torch.Tensor) and not received.is_shared()
        assert received.dtype == tensor.dtype and torch.equal(received, tensor)


def test_worker_batches_equal_in_process_batches_while_all_are_held():
    # 8 batches (the last one smaller) through 4 buffers: each buffer would be overwritten
    # twice if a held batch could lose its buffer.
    expected = expected_batches(30, 4)
    held = list(worker_loader(30, 4))
    assert len(held) == len(expected) == 8
    for batch, reference in zip(held, expected):
        assert_batch_equal(batch, reference)
        assert batch["clip"].is_shared()
        assert batch["clip"].is_contiguous(memory_format=torch.channels_last_3d)
    assert len({segment(batch["clip"]) for batch in held}) == 8
    assert collate([RandomItems(4)[i] for i in range(4)])["clip"].is_contiguous(
        memory_format=torch.channels_last_3d)


def test_a_view_keeps_its_buffer_after_the_batch_is_dropped():
    # detach() shares the storage without keeping the received tensor object alive (a
    # slice would keep it as its `_base`): only the storage says the buffer is still read.
    expected = expected_batches(32, 4)
    views = [batch["clip"].detach()[1:, :, 2:] for batch in worker_loader(32, 4)]
    for view, reference in zip(views, expected):
        assert torch.equal(view, reference["clip"][1:, :, 2:])


def test_buffers_are_reused_once_the_batch_is_dropped():
    segments = []
    for batch, reference in zip(worker_loader(32, 4), expected_batches(32, 4)):
        assert_batch_equal(batch, reference)
        segments.append(segment(batch["clip"]))
    # Held here while the next is fetched: this batch, the one the worker is making, and the
    # two it has made ahead (prefetch_factor 2); so the 4 buffers go round.
    assert len(segments) == 8 and len(set(segments)) <= 4


def test_a_worker_with_every_buffer_taken_sends_fresh_segments(monkeypatch):
    # One buffer, inherited by the forked worker: every batch held here after the first
    # must go to a fresh segment.
    # (The package exports the function `collate` under the module's name.)
    collate_module = importlib.import_module("datasets.collate")
    monkeypatch.setattr(collate_module, "_clip_buffers", ClipBuffers(n_slots=1))
    held = list(worker_loader(20, 4))
    for batch, reference in zip(held, expected_batches(20, 4), strict=True):
        assert_batch_equal(batch, reference)
    assert len({segment(batch["clip"]) for batch in held}) == 5


@pytest.mark.parametrize("n_slots", [1, 2])
def test_clip_buffers_stack_like_torch_stack(n_slots):
    buffers = ClipBuffers(n_slots)
    clips = [torch.randint(0, 256, (4, 8, 8, 3), dtype=torch.uint8) for _ in range(3)]
    sent = [buffers.stack(clips[i:], dims=(0, 4, 1, 2, 3)) for i in range(3)]
    stacks = [getattr(s, "tensor", s) for s in sent]
    for i, stack in enumerate(stacks):
        assert torch.equal(stack, torch.stack(clips[i:]).permute(0, 4, 1, 2, 3))
        assert stack.is_shared()
    # Taken buffers are never handed out again within this process.
    assert len({s.untyped_storage().data_ptr() for s in stacks}) == 3
    assert buffers.taken.tolist() == [1] * n_slots
