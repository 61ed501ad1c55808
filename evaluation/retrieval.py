"""Video retrieval metrics of SPEC §5: R@k and mAP with cosine similarity.

Ranking rule, shared by every function here: gallery items are ordered by descending
cosine similarity to the query; equal similarities keep gallery order (lower index
first). Similarities are computed in float64 and compared at float32 precision, so
identical gallery vectors are exact ties whatever the matmul's rounding, and the result
does not depend on `block_size` or the device. (One exception: a similarity that is 0
only through cancelling positive and negative terms comes out as ±1e-17 or so, depending
on the summation order, and float32 keeps that apart from 0. Non-negative features, such
as the student's pooled ReLU outputs, never cancel.)

R@k and AP need only the ranks of a query's same-class ("relevant") gallery items, so the
metrics never order the gallery itself: each query's similarity values are sorted, and a
relevant item's rank is found by binary search in them (items strictly more similar, plus
one). Ties follow the rule above exactly: among equally similar relevant items, gallery
order decides, and a relevant item that shares its similarity with an item of another
class also counts those of them earlier in gallery order: found among the copies of its
vector when they are all the row's equal items (duplicate videos, zero vectors), else by
scanning its row, or by ranking the row on keys that put gallery order into the value
(`_tie_break_keys`).
"""
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ArrayLike = Tensor | np.ndarray

# Gallery items per float64 matmul: the float64 products of a query block live only this
# many columns at a time, the float32 similarity rows are what the block holds.
GALLERY_CHUNK = 8192
# Similarities handled at a time when counting equal ones (5 bytes each, and 8 for each
# equal one) or ranking rows on tie-break keys (about 36 bytes each).
TIE_SCAN_ITEMS = 1 << 24
# Ranking a row on tie-break keys costs about as much as this many scans of it.
KEYED_ROW_COST = 16
# Identical gallery vectors looked at per tied item at most: ties within a larger group of
# copies are counted by scanning the row.
COPY_GROUP_LIMIT = 64


def _as_features(x: ArrayLike, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contain NaN or inf (features of a diverged model?)")
    return x


def _normalized(x: Tensor, device: torch.device | str) -> Tensor:
    # A zero vector stays zero (similarity 0 to everything) instead of becoming NaN.
    return F.normalize(x.to(device=device, dtype=torch.float64), dim=1)


@dataclass(frozen=True)
class _BlockStorage:
    """Memory reused by every query block of one call: on CPU, the page faults of freshly
    allocated blocks cost about half as much as the float64 matmul itself.

    similarity, ascending: (B, G) float32, a block's similarities and their sorted rows;
    product: (B × GALLERY_CHUNK,) float64, the products of one gallery chunk.
    """
    similarity: Tensor
    ascending: Tensor
    product: Tensor

    @classmethod
    def allocate(cls, rows: int, n_gallery: int, device: torch.device | str) -> "_BlockStorage":
        def empty(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.empty(*shape, dtype=dtype, device=device)
        return cls(empty(rows, n_gallery), empty(rows, n_gallery),
                   empty(rows * min(GALLERY_CHUNK, n_gallery), dtype=torch.float64))


def _similarities(query: Tensor, gallery: Tensor, storage: _BlockStorage) -> Tensor:
    """Cosine similarities at float32 precision, computed in float64.

    query: (b, D) and gallery: (G, D), both L2-normalised float64 on one device; storage
    for at least b rows. Returns (b, G) float32, a view of `storage.similarity`.
    """
    b = len(query)
    similarity = storage.similarity[:b]
    for start in range(0, len(gallery), GALLERY_CHUNK):
        chunk = gallery[start:start + GALLERY_CHUNK]
        product = storage.product[:b * len(chunk)].view(b, len(chunk))
        torch.mm(query, chunk.T, out=product)
        similarity[:, start:start + len(chunk)] = product
    return similarity


def _sorted_rows(x: Tensor, out: Tensor | None = None) -> Tensor:
    """The values of each row of x (b, G) in ascending order, (b, G); on CPU written to
    `out` ((b, G) of x's dtype) when given."""
    if x.device.type != "cpu":
        return torch.sort(x, dim=1).values
    # NumPy's vectorised sort is several times faster than torch.sort on CPU rows; it
    # releases the GIL, so torch's intra-op threads each copy and sort a share of the rows.
    source = x.numpy()
    rows = np.empty_like(source) if out is None else out.numpy()
    bounds = np.linspace(0, len(rows), max(1, min(torch.get_num_threads(), len(rows))) + 1)

    def sort_share(start: int, stop: int) -> None:
        rows[start:stop] = source[start:stop]
        rows[start:stop].sort(axis=1)
    with ThreadPoolExecutor(len(bounds) - 1) as pool:
        list(pool.map(sort_share, bounds[:-1].astype(int), bounds[1:].astype(int)))
    return torch.from_numpy(rows)


def _tie_break_keys(similarity: Tensor) -> Tensor:
    """Distinct int64 keys whose descending order is the ranking rule.

    similarity: (b, G) float32. Returns (b, G) int64: the float32 bits mapped to an integer
    of the same order (-0.0 and 0.0 alike) in the high 32 bits, G - 1 - gallery index in
    the low ones, so equal similarities rank lower indices first.
    """
    bits = (similarity + 0.0).view(torch.int32).to(torch.int64)   # + 0.0 turns -0.0 into 0.0
    # Negative floats have the sign bit set and grow in magnitude with their bits:
    # flipping the other 31 bits makes them increase with their value.
    keys = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    keys.mul_(1 << 32)
    keys.add_(torch.arange(similarity.shape[1] - 1, -1, -1, device=similarity.device))
    return keys


def _keyed_ranks(keys: Tensor, members: Tensor) -> Tensor:
    """1-based ranks of the gallery items `members` in each row's descending order of
    distinct keys (b, G) int64: items with a greater key, plus one. members: (b, M)."""
    at_most = torch.searchsorted(_sorted_rows(keys), keys.gather(1, members), right=True)
    return keys.shape[1] - at_most + 1


def _equal_groups(similarity: Tensor, rows: Tensor, cols: Tensor
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """The distinct (row, similarity) pairs among P items (rows (P,), cols (P,)) of
    similarity (b, G) float32: (group rows (n,), group values (n,), group of each item (P,))."""
    values = similarity[rows, cols] + 0.0                     # + 0.0 turns -0.0 into 0.0
    keys = (rows << 32) | (values.view(torch.int32).to(torch.int64) & 0xFFFFFFFF)
    groups, inverse = torch.unique(keys, return_inverse=True)
    first = torch.zeros(len(groups), dtype=torch.int64, device=rows.device).scatter_reduce_(
        0, inverse, torch.arange(len(rows), device=rows.device), "amin", include_self=False)
    return rows[first], values[first], inverse


def _equal_before(similarity: Tensor, group_rows: Tensor, group_values: Tensor,
                  inverse: Tensor, cols: Tensor) -> Tensor:
    """For P items (group of each (P,), gallery index cols (P,)): how many items earlier in
    gallery order have exactly the item's similarity. Each group's row is scanned once,
    TIE_SCAN_ITEMS similarities at a time. Returns (P,) int64."""
    counts = torch.empty_like(cols)
    n_gallery = similarity.shape[1]
    chunk = max(1, TIE_SCAN_ITEMS // n_gallery)
    for start in range(0, len(group_rows), chunk):
        stop = start + chunk
        equal = similarity[group_rows[start:stop]] == group_values[start:stop, None]
        # Positions of the equal items as group * G + gallery index, in ascending order.
        found = equal.flatten().nonzero().flatten()
        here = (inverse >= start) & (inverse < stop)
        row_start = (inverse[here] - start) * n_gallery
        counts[here] = (torch.searchsorted(found, row_start + cols[here])
                        - torch.searchsorted(found, row_start))
    return counts


def _relevant_ranks(similarity: Tensor, members: Tensor, valid: Tensor, copies: "_GalleryCopies",
                    ascending: Tensor | None = None) -> Tensor:
    """Ranks (ranking rule of the module docstring, 1-based) of gallery items `members`.

    similarity: (b, G) float32; members: (b, M) gallery indices in gallery order per row;
    valid: (b, M) bool, which entries of `members` are real (the others are padding, their
    ranks meaningless); copies: the gallery's identical vectors; ascending: storage for the
    sorted rows (see `_sorted_rows`). Returns (b, M) int64.

    rank = 1 + items more similar + equally similar items earlier in gallery order; the
    last term is found only for rows where a relevant item's similarity is shared
    (`_earlier_equal`).
    """
    ascending = _sorted_rows(similarity, ascending)
    values = similarity.gather(1, members).masked_fill(~valid, float("inf"))
    at_most = torch.searchsorted(ascending, values, right=True)
    ranks = similarity.shape[1] - at_most + 1
    # An item's value is the last of its equal ones in `ascending`: one more before it is a tie.
    tied = valid & (at_most >= 2) & (ascending.gather(1, (at_most - 2).clamp(min=0)) == values)
    rows = tied.any(dim=1).nonzero().flatten()
    if len(rows):
        n_equal = (at_most - torch.searchsorted(ascending, values))[rows]
        ranks[rows] += _earlier_equal(similarity, ascending, copies, rows, values[rows],
                                      at_most[rows], n_equal, members[rows], valid[rows])
    return ranks


def _earlier_equal(similarity: Tensor, ascending: Tensor, copies: "_GalleryCopies", rows: Tensor,
                   values: Tensor, at_most: Tensor, n_equal: Tensor, members: Tensor,
                   valid: Tensor) -> Tensor:
    """For each relevant item of the rows `rows` (r,) with ties: how many items with exactly
    its similarity come earlier in gallery order. similarity and ascending (its rows
    sorted): (b, G) of the whole block; values (r, M) the items' similarities (inf for
    padding), at_most (r, M) the number of items at most as similar, n_equal (r, M) the
    number exactly as similar, members and valid as in `_relevant_ranks`, for these rows.
    Returns (r, M).

    When every item sharing the similarity is relevant, that is the number of those earlier
    among `members`. Items that share it with an item of another class get it from the
    copies of their vector when those are all its equal items, else by scanning their row
    for that similarity, or, when that would scan rows more than KEYED_ROW_COST times each,
    from ranking their rows on `_tie_break_keys`.
    """
    # Equal values among the row's relevant items: a stable sort keeps them in gallery order.
    relevant, order = torch.sort(values, dim=1, stable=True)
    first = torch.searchsorted(relevant, relevant)
    n_equal_relevant = torch.empty_like(first).scatter_(
        1, order, torch.searchsorted(relevant, relevant, right=True) - first)
    earlier = torch.empty_like(first).scatter_(
        1, order, torch.arange(relevant.shape[1], device=first.device) - first)
    # One more equal value below the relevant ones means an item of another class.
    below = at_most - 1 - n_equal_relevant
    mixed = valid & (below >= 0) & (ascending[rows[:, None], below.clamp(min=0)] == values)
    if not bool(mixed.any()):
        return earlier
    local, slots = mixed.nonzero(as_tuple=True)
    among_copies, resolved = _earlier_equal_among_copies(
        similarity, copies, rows[local], members[local, slots], values[local, slots],
        n_equal[local, slots])
    earlier[local[resolved], slots[resolved]] = among_copies[resolved]
    mixed[local[resolved], slots[resolved]] = False
    if not bool(mixed.any()):
        return earlier
    local, slots = mixed.nonzero(as_tuple=True)
    cols = members[local, slots]
    group_rows, group_values, inverse = _equal_groups(similarity, rows[local], cols)
    keyed = mixed.any(dim=1).nonzero().flatten()
    if len(group_rows) <= KEYED_ROW_COST * len(keyed):
        earlier[local, slots] = _equal_before(similarity, group_rows, group_values, inverse, cols)
        return earlier
    n_gallery = similarity.shape[1]
    chunk = max(1, TIE_SCAN_ITEMS // n_gallery)
    for part in keyed.split(chunk):
        ranks = _keyed_ranks(_tie_break_keys(similarity[rows[part]]), members[part])
        earlier[part] = ranks - (n_gallery - at_most[part] + 1)
    return earlier


def _earlier_equal_among_copies(similarity: Tensor, copies: "_GalleryCopies", rows: Tensor,
                                cols: Tensor, values: Tensor, n_equal: Tensor
                                ) -> tuple[Tensor, Tensor]:
    """For P tied items (block row rows (P,), gallery index cols (P,), similarity values
    (P,), n_equal (P,) items of the row with exactly that similarity): how many of those
    come earlier in gallery order, counted among the item's group of copies
    (`_GalleryCopies`, at most COPY_GROUP_LIMIT of them). Exact where the group holds all
    n_equal equal items of the row. Returns (earlier (P,) int64, resolved (P,) bool: where
    it is exact)."""
    earlier = torch.zeros_like(cols)
    resolved = torch.zeros_like(cols, dtype=torch.bool)
    groups = copies.groups
    group = groups.id[cols]
    size = groups.count[group]
    candidates = ((size > 1) & (size <= COPY_GROUP_LIMIT)).nonzero().flatten()
    if len(candidates) == 0:
        return earlier, resolved
    for part in candidates.split(max(1, TIE_SCAN_ITEMS // COPY_GROUP_LIMIT)):
        copy_cols, valid = groups.members(group[part])
        equal = valid & (similarity[rows[part, None], copy_cols] == values[part, None])
        resolved[part] = equal.sum(dim=1) == n_equal[part]
        earlier[part] = (equal & (copy_cols < cols[part, None])).sum(dim=1)
    return earlier, resolved


class _GalleryGroups:
    """The gallery's items grouped by an id (their class, or their vector's copies), to list
    the members of given groups.

    ids: (G,) int64 group ids ≥ 0 on the device; n_groups: more than the largest id.
    """

    def __init__(self, ids: Tensor, n_groups: int) -> None:
        self.id = ids
        self.by_group = torch.sort(ids, stable=True).indices     # gallery order within a group
        self.count = torch.bincount(ids, minlength=n_groups)
        self.start = self.count.cumsum(0) - self.count

    def members(self, group_ids: Tensor) -> tuple[Tensor, Tensor]:
        """(members (b, M) gallery indices of each group in `group_ids` (b,), in gallery
        order, padded; valid (b, M) bool), M = the largest of these groups (at least 1)."""
        count = self.count[group_ids]
        width = max(int(count.max()), 1)
        position = torch.arange(width, device=count.device)
        valid = position < count[:, None]
        index = (self.start[group_ids][:, None] + position).clamp(max=len(self.by_group) - 1)
        return self.by_group[index], valid


class _GalleryCopies:
    """The gallery's items grouped by an exact hash of their float64 vectors, built on first
    use: identical vectors (copies of a video, zero vectors) share a group, so their
    similarities to any query are usually each other's only exact ties. A group is a set of
    candidates only: `_earlier_equal_among_copies` uses it where it holds every equal item.

    gallery: (G, D) float64 on the device.
    """

    def __init__(self, gallery: Tensor) -> None:
        self._gallery = gallery
        self._groups: _GalleryGroups | None = None

    @property
    def groups(self) -> _GalleryGroups:
        if self._groups is None:
            n_gallery, dim = self._gallery.shape
            device = self._gallery.device
            # Residues of the float64 bits below 2^31 times weights below 2^16: a sum of D
            # such products stays below 2^63 for D < 2^16, so the hash is exact integer
            # arithmetic (a collision only costs a row scan, never a wrong count).
            weights = torch.randint(1, 1 << 16, (dim,), generator=torch.Generator().manual_seed(0))
            weights = weights.to(device)
            keys = torch.empty(n_gallery, dtype=torch.int64, device=device)
            for start in range(0, n_gallery, GALLERY_CHUNK):
                bits = self._gallery[start:start + GALLERY_CHUNK].view(torch.int64)
                keys[start:start + GALLERY_CHUNK] = (bits.remainder((1 << 31) - 1) * weights).sum(1)
            groups, ids = torch.unique(keys, return_inverse=True)
            self._groups = _GalleryGroups(ids, len(groups))
        return self._groups


def retrieval_metrics(query_feats: ArrayLike, query_labels: ArrayLike,
                      gallery_feats: ArrayLike, gallery_labels: ArrayLike,
                      ks: Sequence[int] = (1, 5, 10, 20), block_size: int = 1024,
                      device: torch.device | str = "cpu") -> dict[str, float | int]:
    """Recall@k and mAP of SPEC §5, in percent.

    query_feats: (Q, D), query_labels: (Q,); gallery_feats: (G, D), gallery_labels: (G,).
    Labels are class ids >= 0 (drop unlabeled videos first); features must be finite.
    R@k = share of queries with at least one same-class gallery item among their k
    nearest. AP of a query = mean over its same-class gallery items of the precision at
    that item's rank in the full ranking (the i-th of them in rank order, at rank r,
    has precision i / r); mAP = mean AP over all queries. A query whose class is absent
    from the gallery has AP 0 and a miss at every k, and still counts in both means (the
    strict convention: the score is over every query, not only the answerable ones).
    Queries are processed `block_size` at a time on `device` (CPU or CUDA); memory is
    about 8 bytes × block_size × G (a block's similarities and their sorted rows), plus the
    float64 gallery (8 bytes × G × D) and at most about 600 MB for ties.
    Returns {"R@k": ..., "mAP": ..., "n_query": Q, "n_gallery": G}.
    """
    query_feats = _as_features(query_feats, "query_feats")
    gallery_feats = _as_features(gallery_feats, "gallery_feats")
    query_labels = torch.as_tensor(query_labels).reshape(-1).to(torch.int64)
    gallery_labels = torch.as_tensor(gallery_labels).reshape(-1).to(torch.int64)
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
    n_labels = int(max(query_labels.max(), gallery_labels.max())) + 1
    classes = _GalleryGroups(gallery_labels.to(device), n_labels)
    copies = _GalleryCopies(gallery)
    n_query = len(query_feats)
    storage = _BlockStorage.allocate(min(block_size, n_query), len(gallery), device)
    first_hit = torch.empty(n_query, dtype=torch.int64)   # 1-based rank, 0 if none
    average_precision = torch.empty(n_query, dtype=torch.float64)
    for start in range(0, n_query, block_size):
        stop = min(start + block_size, n_query)
        similarity = _similarities(_normalized(query_feats[start:stop], device), gallery,
                                   storage)
        members, valid = classes.members(query_labels[start:stop].to(device))
        ranks = _relevant_ranks(similarity, members, valid, copies,
                                storage.ascending[:stop - start])
        # Padding ranks after every real one: row-wise sorting puts the relevant items'
        # ranks first, in rank order.
        ranks = torch.sort(torch.where(valid, ranks, len(gallery) + 1), dim=1).values
        n_relevant = valid.sum(dim=1)
        found = torch.arange(1, ranks.shape[1] + 1, dtype=torch.float64,
                             device=ranks.device)   # i of i / rank
        precision = torch.where(found <= n_relevant[:, None], found / ranks, 0.0)
        average_precision[start:stop] = (precision.sum(dim=1)
                                         / n_relevant.clamp(min=1)).cpu()
        first_hit[start:stop] = torch.where(n_relevant > 0, ranks[:, 0], 0).cpu()

    found = first_hit > 0
    metrics: dict[str, float | int] = {
        f"R@{k}": 100.0 * (found & (first_hit <= k)).double().mean().item() for k in ks}
    metrics["mAP"] = 100.0 * average_precision.mean().item()
    metrics["n_query"] = n_query
    metrics["n_gallery"] = len(gallery)
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
    storage = _BlockStorage.allocate(min(block_size, len(query_feats)), len(gallery), device)
    blocks = []
    for start in range(0, len(query_feats), block_size):
        similarity = _similarities(_normalized(query_feats[start:start + block_size], device),
                                   gallery, storage)
        order = torch.sort(similarity, dim=1, descending=True, stable=True).indices
        blocks.append(order[:, :k].cpu())
    return torch.cat(blocks) if blocks else torch.empty(0, k, dtype=torch.int64)
