"""Video retrieval metrics of SPEC §5: R@k and mAP with cosine similarity.

Ranking rule, shared by every function here: gallery items are ordered by descending
cosine similarity to the query; equal similarities keep gallery order (lower index
first). Similarities are computed in float64 and compared at float32 precision, so
identical gallery vectors are exact ties whatever the matmul's rounding, and the result
does not depend on `block_size` or the device.
"""
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ArrayLike = Tensor | np.ndarray


def _as_features(x: ArrayLike, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {tuple(x.shape)}")
    return x


def _rank_block(query: Tensor, gallery: Tensor) -> Tensor:
    """Gallery indices of each query in ranking order (see module docstring).

    query: (b, D) and gallery: (G, D), both L2-normalised float64 on one device.
    Returns (b, G) int64.
    """
    similarity = (query @ gallery.T).float()
    return torch.sort(similarity, dim=1, descending=True, stable=True).indices


def _normalized(x: Tensor, device: torch.device | str) -> Tensor:
    # A zero vector stays zero (similarity 0 to everything) instead of becoming NaN.
    return F.normalize(x.to(device=device, dtype=torch.float64), dim=1)


def retrieval_metrics(query_feats: ArrayLike, query_labels: ArrayLike,
                      gallery_feats: ArrayLike, gallery_labels: ArrayLike,
                      ks: Sequence[int] = (1, 5, 10, 20), block_size: int = 1024,
                      device: torch.device | str = "cpu") -> dict[str, float | int]:
    """Recall@k and mAP of SPEC §5, in percent.

    query_feats: (Q, D), query_labels: (Q,); gallery_feats: (G, D), gallery_labels: (G,).
    Labels are class ids >= 0 (drop unlabeled videos first).
    R@k = share of queries with at least one same-class gallery item among their k
    nearest. AP of a query = mean over its same-class gallery items of the precision at
    that item's rank in the full ranking; mAP = mean AP over all queries. A query whose
    class is absent from the gallery has AP 0 and a miss at every k, and still counts in
    both means (the strict convention: the score is over every query, not only the
    answerable ones).
    Queries are processed `block_size` at a time; memory is about 40 bytes ×
    block_size × G.
    Returns {"R@k": ..., "mAP": ..., "n_query": Q, "n_gallery": G}.
    """
    query_feats = _as_features(query_feats, "query_feats")
    gallery_feats = _as_features(gallery_feats, "gallery_feats")
    query_labels = torch.as_tensor(query_labels).reshape(-1)
    gallery_labels = torch.as_tensor(gallery_labels).reshape(-1)
    if len(query_labels) != len(query_feats) or len(gallery_labels) != len(gallery_feats):
        raise ValueError(f"{len(query_feats)} query and {len(gallery_feats)} gallery features "
                         f"but {len(query_labels)} and {len(gallery_labels)} labels")
    if query_feats.shape[1] != gallery_feats.shape[1]:
        raise ValueError(f"query features are {query_feats.shape[1]}-d, "
                         f"gallery features {gallery_feats.shape[1]}-d")
    if len(query_feats) == 0 or len(gallery_feats) == 0:
        raise ValueError("retrieval needs at least one query and one gallery item")
    if bool((query_labels < 0).any()) or bool((gallery_labels < 0).any()):
        raise ValueError("labels must be >= 0: remove unlabeled videos before retrieval")
    if block_size < 1 or any(k < 1 for k in ks):
        raise ValueError(f"block_size and every k must be >= 1, got {block_size}, {list(ks)}")

    gallery = _normalized(gallery_feats, device)
    gallery_labels = gallery_labels.to(device)
    n_query, n_gallery = len(query_feats), len(gallery_feats)
    ranks = torch.arange(1, n_gallery + 1, dtype=torch.float64, device=device)
    first_hit = torch.empty(n_query, dtype=torch.int64)   # 0-based rank, -1 if none
    average_precision = torch.empty(n_query, dtype=torch.float64)
    for start in range(0, n_query, block_size):
        stop = min(start + block_size, n_query)
        order = _rank_block(_normalized(query_feats[start:stop], device), gallery)
        labels = query_labels[start:stop].to(device)
        relevant = gallery_labels[order] == labels[:, None]              # (b, G)
        del order
        hits = relevant.cumsum(dim=1)
        n_relevant = hits[:, -1]
        precision_sum = torch.where(relevant, hits / ranks, 0.0).sum(dim=1)
        average_precision[start:stop] = (precision_sum / n_relevant.clamp(min=1)).cpu()
        # argmax of a bool row = first True; rows without one are set to "never".
        first = relevant.to(torch.uint8).argmax(dim=1)
        first_hit[start:stop] = torch.where(n_relevant > 0, first, -1).cpu()

    found = first_hit >= 0
    metrics: dict[str, float | int] = {
        f"R@{k}": 100.0 * (found & (first_hit < k)).double().mean().item() for k in ks}
    metrics["mAP"] = 100.0 * average_precision.mean().item()
    metrics["n_query"] = n_query
    metrics["n_gallery"] = n_gallery
    return metrics


def nearest_neighbours(query_feats: ArrayLike, gallery_feats: ArrayLike, k: int,
                       block_size: int = 1024,
                       device: torch.device | str = "cpu") -> Tensor:
    """Indices (Q, min(k, G)) of each query's nearest gallery items, nearest first.

    query_feats: (Q, D), gallery_feats: (G, D); same ranking rule as `retrieval_metrics`.
    """
    query_feats = _as_features(query_feats, "query_feats")
    gallery = _normalized(_as_features(gallery_feats, "gallery_feats"), device)
    k = min(k, len(gallery))
    blocks = [_rank_block(_normalized(query_feats[start:start + block_size], device),
                          gallery)[:, :k].cpu()
              for start in range(0, len(query_feats), block_size)]
    return torch.cat(blocks) if blocks else torch.empty(0, k, dtype=torch.int64)
