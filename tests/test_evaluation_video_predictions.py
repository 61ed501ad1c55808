"""predict_videos (per-video means of window outputs), val.json and feature files."""
import io
import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from evaluation.video_predictions import (load_features, predict_videos, save_features,
                                          write_val_json)

N_CLASSES, DIM = 4, 512
WINDOWS_PER_VIDEO = [3, 1, 4, 2, 2]


class FakeStudent(nn.Module):
    """logits = m A, features = m F with m the per-channel mean of the clip (B, 3); it keeps
    what it returned for each batch in `outputs`."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("to_logits", torch.randn(3, N_CLASSES, generator=generator))
        self.register_buffer("to_features", torch.randn(3, DIM, generator=generator))
        self.modes: list[tuple[bool, bool]] = []
        self.outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, clip):
        self.modes.append((self.training, torch.is_inference_mode_enabled()))
        m = clip.mean(dim=(2, 3, 4))
        logits, features = m @ self.to_logits, m @ self.to_features
        self.outputs.append((logits.clone(), features.clone()))
        return logits, features


def normalize(clip):
    return clip.float() / 255 - 0.5


def make_windows():
    """Windows of 5 videos, shuffled so every video's windows are spread over batches."""
    generator = torch.Generator().manual_seed(1)
    video_index = torch.tensor([v for v, n in enumerate(WINDOWS_PER_VIDEO) for _ in range(n)])
    video_index = video_index[torch.randperm(len(video_index), generator=generator)]
    clips = torch.randint(0, 256, (len(video_index), 3, 2, 4, 4), dtype=torch.uint8,
                          generator=generator)
    return clips, video_index


def batches(clips, video_index, batch_size):
    return [{"clip": clips[i:i + batch_size], "video_index": video_index[i:i + batch_size],
             "target": torch.zeros(len(video_index[i:i + batch_size]), dtype=torch.int64), "bad": []}
            for i in range(0, len(clips), batch_size)]


def direct_means(model, clips, video_index):
    """Oracle: one window at a time, grouped in a dict, plain means."""
    per_video: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for clip, v in zip(clips, video_index.tolist()):
        m = normalize(clip).mean(dim=(1, 2, 3))
        scores = torch.softmax(m @ model.to_logits, dim=0)
        per_video.setdefault(v, []).append((scores, m @ model.to_features))
    scores = torch.stack([sum(s for s, _ in per_video[v]) / len(per_video[v])
                          for v in sorted(per_video)])
    features = torch.stack([sum(f for _, f in per_video[v]) / len(per_video[v])
                            for v in sorted(per_video)])
    return scores, features


def test_per_video_means_match_a_direct_computation():
    model = FakeStudent().train()
    clips, video_index = make_windows()
    result = predict_videos(model, batches(clips, video_index, 5), len(WINDOWS_PER_VIDEO),
                            "cpu", normalize)
    scores, features = direct_means(model, clips, video_index)
    assert result.counts.tolist() == WINDOWS_PER_VIDEO
    assert result.scores.dtype == result.features.dtype == torch.float32
    assert torch.allclose(result.scores, scores, atol=1e-6)
    assert torch.allclose(result.features, features, atol=1e-5)
    assert torch.allclose(result.scores.sum(1), torch.ones(5))
    assert set(model.modes) == {(False, True)}      # eval mode, inference mode
    assert model.training                            # given back as it came


def test_autocast_path_averages_float32_softmaxes_of_the_bf16_outputs():
    """Under bf16 autocast the network's outputs are bf16; the softmax and the means are
    float32 / float64 all the same. Oracle: the outputs the model returned, each window's
    softmax in float32, plain means per video. (A softmax taken in bf16 is about 8e-4 off
    here; bf16 against full precision about 1e-4.)"""
    model = FakeStudent()
    clips, video_index = make_windows()
    loader = batches(clips, video_index, 4)
    full = predict_videos(model, loader, 5, "cpu", normalize)
    model.outputs.clear()
    mixed = predict_videos(model, loader, 5, "cpu", normalize, amp_dtype=torch.bfloat16)
    assert mixed.scores.dtype == torch.float32
    assert {(l.dtype, f.dtype) for l, f in model.outputs} == {(torch.bfloat16, torch.bfloat16)}
    per_video: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for batch, (logits, features) in zip(loader, model.outputs, strict=True):
        for v, window_logits, window_features in zip(batch["video_index"].tolist(), logits, features):
            per_video.setdefault(v, []).append((window_logits.float().softmax(0), window_features.double()))
    scores = torch.stack([sum(s for s, _ in per_video[v]) / len(per_video[v]) for v in range(5)])
    features = torch.stack([sum(f for _, f in per_video[v]) / len(per_video[v]) for v in range(5)])
    torch.testing.assert_close(mixed.scores, scores, rtol=0, atol=1e-6)
    torch.testing.assert_close(mixed.features, features.float(), rtol=1e-6, atol=1e-6)
    assert torch.allclose(mixed.scores, full.scores, atol=2e-3)


def test_a_video_without_windows_or_a_bad_index_is_an_error():
    clips, video_index = make_windows()
    with pytest.raises(RuntimeError, match="1 of 6 videos got no inference window"):
        predict_videos(FakeStudent(), batches(clips, video_index, 5), 6, "cpu", normalize)
    with pytest.raises(ValueError, match="out of range"):
        predict_videos(FakeStudent(), batches(clips, video_index, 5), 4, "cpu", normalize)


def _distributed_worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        clips, video_index = make_windows()
        loader = batches(clips, video_index, 3)
        split = predict_videos(FakeStudent(), loader[rank::2], 5, "cpu", normalize)
        # Rank 1 sees no batch at all: its widths come from rank 0.
        lopsided = predict_videos(FakeStudent(), loader if rank == 0 else [], 5, "cpu",
                                  normalize)
        torch.save({"split": split, "lopsided": lopsided}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_sums_equal_the_single_process_result(tmp_path):
    mp.spawn(_distributed_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    clips, video_index = make_windows()
    single = predict_videos(FakeStudent(), batches(clips, video_index, 3), 5, "cpu", normalize)
    for rank in range(2):
        results = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for result in results.values():
            assert torch.equal(result.counts, single.counts)
            assert torch.allclose(result.scores, single.scores, atol=1e-6)
            assert torch.allclose(result.features, single.features, atol=1e-5)


def test_write_val_json_keeps_the_top_k_in_order(tmp_path):
    scores = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.4, 0.2, 0.4]])
    path = tmp_path / "val.json"
    write_val_json(path, ["v0", "v1", "v2"], scores, ["x", "y", "z"], topk=2)
    results = json.loads(path.read_text())["results"]
    assert [[e["label"] for e in results[v]] for v in ("v0", "v1", "v2")] == [
        ["y", "z"], ["x", "z"], ["x", "z"]]          # equal scores: lower class index first
    assert [e["score"] for e in results["v0"]] == pytest.approx([0.6, 0.3])
    write_val_json(path, ["v0", "v1", "v2"], scores.numpy(), ["x", "y", "z"], topk=5)
    assert len(json.loads(path.read_text())["results"]["v1"]) == 3
    with pytest.raises(ValueError, match="do not match"):
        write_val_json(path, ["v0"], scores, ["x", "y", "z"], topk=1)


def test_features_round_trip(tmp_path):
    path = tmp_path / "features_validation.npz"
    features = np.random.default_rng(0).normal(size=(3, DIM))
    save_features(path, ["a", "bb", "ccc"], torch.tensor([2, -1, 0]), torch.tensor(features))
    loaded = load_features(path)
    assert loaded.ids.tolist() == ["a", "bb", "ccc"]
    assert loaded.labels.dtype == np.int64 and loaded.labels.tolist() == [2, -1, 0]
    assert loaded.features.dtype == np.float32
    assert np.array_equal(loaded.features, features.astype(np.float32))
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_features(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="same"):
        save_features(path, ["a"], [0, 1], features[:2])



def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("content", [npy_bytes(np.zeros(4, np.float32)), b'{"results": {}}'],
                         ids=["npy_array", "val_json"])
def test_a_file_that_is_not_an_npz_archive_is_refused_in_plain_words(tmp_path, content):
    path = tmp_path / "features_validation.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError) as raised:
        load_features(path)
    assert str(raised.value) == (f"{path} is not a features file (not an .npz archive); expected "
                                 "a features_<subset>.npz written by inference")
