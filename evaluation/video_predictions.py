"""Video-level inference (SPEC §1 inference output, §4 inference, §5 video features).

A video is cut into windows by the dataset (`video_index` tells which video each window
belongs to); here the model runs over every window and the window outputs are averaged
per video: softmax scores for `val.json`, pooled features for retrieval.
"""
import io
import json
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from datasets.device_decode import clip_to_device
from errors import require_file
from datasets.loader import batches
from datasets.video_dataset import unreadable_at_inference
from training.distributed import is_distributed, is_main_process
from training.files import write_atomically


@dataclass
class VideoPredictions:
    """Per-video averages of the window outputs.

    scores: (N, C) float32, softmax averaged over the video's windows (SPEC §1).
    features: (N, D) float32, pooled student features averaged over the windows (SPEC §5).
    counts: (N,) int64, number of windows of each video.
    """
    scores: Tensor
    features: Tensor
    counts: Tensor


def predict_videos(model: nn.Module, loader: Iterable[dict], n_videos: int,
                   device: torch.device | str,
                   normalize: Callable[[Tensor], Tensor],
                   amp_dtype: torch.dtype | None = None) -> VideoPredictions:
    """Run `model` over every window of `loader` and average its outputs per video.

    loader: yields dicts with `clip` uint8 (B, 3, T, S, S) (or undecoded frames,
        `clip_to_device`) and `video_index` int64 (B,) (DESIGN.md dataset items); windows
        of one video may be spread over any batches.
    n_videos: N, the number of videos (`len(dataset.video_ids)`).
    normalize: maps the uint8 clip batch, already on `device`, to the float model input.
    amp_dtype: autocast dtype (e.g. torch.bfloat16) or None for full precision; the
        softmax and the sums are computed in float32 / float64 either way.
    Returns VideoPredictions with scores (N, C), features (N, D), counts (N,) on the CPU.

    Under torch.distributed every rank sees its own share of the windows (a sampler that
    does not pad, so each window is seen once) and the per-video sums are all-reduced;
    every rank returns the full result. A window whose frames cannot be decoded (in the
    training process, `clip_to_device`) is an UnreadableDataError naming the file, as the
    dataset raises for one it cannot read: nothing stands in for a window. Raises
    RuntimeError when a video got no window.
    The model is put in eval mode and given back in the mode it came in.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    # Accumulated in float64: the sums are order independent up to ~1e-16, so a result
    # does not depend on batch size or the number of ranks beyond float32 resolution.
    score_sum: Tensor | None = None
    feature_sum: Tensor | None = None
    counts = torch.zeros(n_videos, dtype=torch.int64, device=device)
    show_bar = is_main_process()
    with torch.inference_mode():
        for batch in batches(loader, "inference", show=show_bar):
            batch = clip_to_device(batch, device)
            if batch["bad"]:
                raise unreadable_at_inference(batch["bad"][0])
            index = batch["video_index"].reshape(-1)
            if len(index) and (int(index.min()) < 0 or int(index.max()) >= n_videos):
                raise ValueError(f"video_index out of range [0, {n_videos}): "
                                 f"{int(index.min())}..{int(index.max())}; "
                                 "n_videos must be len(dataset.video_ids)")
            index = index.to(device, non_blocking=True)
            clip = normalize(batch["clip"])
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits, features = model(clip)
            if score_sum is None:
                score_sum = torch.zeros(n_videos, logits.shape[1], dtype=torch.float64,
                                        device=device)
                feature_sum = torch.zeros(n_videos, features.shape[1], dtype=torch.float64,
                                          device=device)
            score_sum.index_add_(0, index, logits.float().softmax(dim=1).double())
            feature_sum.index_add_(0, index, features.double())
            counts.index_add_(0, index, torch.ones_like(index))
    model.train(was_training)

    if is_distributed():
        # A rank may have had no batch at all: agree on the output widths first.
        widths = torch.tensor([0, 0] if score_sum is None
                              else [score_sum.shape[1], feature_sum.shape[1]], device=device)
        dist.all_reduce(widths, op=dist.ReduceOp.MAX)
        if score_sum is None:
            score_sum = torch.zeros(n_videos, int(widths[0]), dtype=torch.float64, device=device)
            feature_sum = torch.zeros(n_videos, int(widths[1]), dtype=torch.float64,
                                      device=device)
        for total in (score_sum, feature_sum, counts):
            dist.all_reduce(total)

    missing = (counts == 0).nonzero().flatten()
    if score_sum is None or len(missing):
        first = 0 if score_sum is None else int(missing[0])
        n_missing = n_videos if score_sum is None else len(missing)
        raise RuntimeError(f"{n_missing} of {n_videos} videos got no inference window "
                           f"(first: video_index {first}); the loader must cover every video")
    per_video = counts.unsqueeze(1).double()
    return VideoPredictions(scores=(score_sum / per_video).float().cpu(),
                            features=(feature_sum / per_video).float().cpu(),
                            counts=counts.cpu())


def write_val_json(path: Path | str, video_ids: Sequence[str], scores: Tensor | np.ndarray,
                   class_names: Sequence[str], topk: int) -> None:
    """Write `val.json` in the original's format (SPEC §1).

    scores: (N, C) video scores, row i for video_ids[i].
    Writes {"results": {video_id: [{"label": name, "score": p}, ...]}} with the
    min(topk, C) highest scores of each video in descending order (equal scores: lower
    class index first), scores as Python floats.
    """
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if scores.ndim != 2 or scores.shape != (len(video_ids), len(class_names)):
        raise ValueError(f"scores of shape {tuple(scores.shape)} do not match "
                         f"{len(video_ids)} videos × {len(class_names)} classes")
    if topk < 1:
        raise ValueError(f"topk must be at least 1, got {topk}")
    k = min(topk, len(class_names))
    top_scores, top_classes = torch.sort(scores, dim=1, descending=True, stable=True)
    results = {
        video_id: [{"label": class_names[c], "score": s}
                   for c, s in zip(top_classes[i, :k].tolist(), top_scores[i, :k].tolist())]
        for i, video_id in enumerate(video_ids)
    }
    write_atomically(Path(path), json.dumps({"results": results}).encode())


class VideoFeatures(NamedTuple):
    """Contents of a `features_<subset>.npz` (DESIGN.md result directory).

    ids: (N,) str, labels: (N,) int64 (-1 when unlabeled), features: (N, D) float32.
    """
    ids: np.ndarray
    labels: np.ndarray
    features: np.ndarray


def save_features(path: Path | str, ids: Sequence[str], labels: Tensor | np.ndarray,
                  features: Tensor | np.ndarray) -> None:
    """Write video features (N, D) with their ids (N,) and labels (N,) to `path` (.npz)."""
    ids = np.asarray(list(ids), dtype=str)
    labels = np.asarray(labels, dtype=np.int64)
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or not len(ids) == len(labels) == len(features):
        raise ValueError(f"{len(ids)} ids, {len(labels)} labels and features of shape "
                         f"{features.shape} do not describe the same (N, D) videos")
    # Through a buffer: np.savez would append ".npz" to a path without it.
    buffer = io.BytesIO()
    np.savez(buffer, ids=ids, labels=labels, features=features)
    write_atomically(Path(path), buffer.getbuffer())


def load_features(path: Path | str) -> VideoFeatures:
    """Read a file written by `save_features`."""
    path = Path(path)
    require_file(path, "", "a features_<subset>.npz written by inference",
                 fix=" (written by inference, features_<subset>.npz in the result directory)")
    # np.load would read an .npy array, and answer anything else with advice to unpickle it.
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a features file (not an .npz archive); expected "
                         "a features_<subset>.npz written by inference")
    try:
        data = np.load(path)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:   # a torn or foreign archive
        raise ValueError(f"{path} is not a features file ({' '.join(str(e).split())[:120]}); expected "
                         "a features_<subset>.npz written by inference") from None
    with data:
        missing = {"ids", "labels", "features"} - set(data.files)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}; expected a features_<subset>.npz "
                             "with ids, labels and features")
        features = VideoFeatures(ids=data["ids"].astype(str),
                                 labels=data["labels"].astype(np.int64),
                                 features=data["features"].astype(np.float32))
    if features.features.ndim != 2 or not (len(features.ids) == len(features.labels)
                                           == len(features.features)):
        raise ValueError(f"{path}: ids, labels and features do not have the same length")
    return features
