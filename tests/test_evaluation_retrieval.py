"""R@k and mAP (SPEC §5) against a loop oracle and a hand-computed case."""
import json
import math

import numpy as np
import pytest
import torch

from evaluation.retrieval import nearest_neighbours, retrieval_metrics
from evaluation.video_predictions import save_features
from util_scripts import eval_retrieval

KS = (1, 5, 10, 20, 50)
SAVED_KS = (1, 5, 10, 20)   # what main.py and eval_retrieval.py write (retrieval_metrics' default)


def brute_force_metrics(query, query_labels, gallery, gallery_labels, ks):
    """Loops over queries; full sort by (-similarity at float32 precision, gallery index)."""
    def unit(v):
        v = [float(x) for x in v]
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v] if norm else v     # a zero vector stays zero

    gallery = [unit(g) for g in gallery]
    hits = {k: 0 for k in ks}
    average_precisions = []
    for q, label in zip(query, query_labels):
        q = unit(q)
        sims = [np.float32(sum(a * b for a, b in zip(q, g))) for g in gallery]
        order = sorted(range(len(gallery)), key=lambda j: (-sims[j], j))
        relevant = [gallery_labels[j] == label for j in order]
        for k in ks:
            hits[k] += any(relevant[:k])
        found, precisions = 0, []
        for rank, is_relevant in enumerate(relevant, start=1):
            if is_relevant:
                found += 1
                precisions.append(found / rank)
        average_precisions.append(sum(precisions) / len(precisions) if precisions else 0.0)
    expected = {f"R@{k}": 100 * hits[k] / len(query) for k in ks}
    expected["mAP"] = 100 * sum(average_precisions) / len(average_precisions)
    return expected


def random_case():
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(40, 8)).astype(np.float32)
    gallery_labels = rng.integers(0, 4, size=40)
    # Exact duplicates with another label: ties whose order changes R@k and AP.
    gallery[30:36] = gallery[0:6]
    gallery_labels[30:36] = (gallery_labels[0:6] + 1) % 4
    query = rng.normal(size=(23, 8)).astype(np.float32)
    query[:3] = 2 * gallery[:3]            # nearest items are a tied duplicate pair
    query_labels = rng.integers(0, 6, size=23)   # classes 4 and 5 are not in the gallery
    query_labels[:3] = gallery_labels[30:33]     # the later duplicate is the relevant one
    query_labels[3] = 5
    return query, query_labels, gallery, gallery_labels


def test_matches_brute_force_with_ties_and_absent_classes():
    query, query_labels, gallery, gallery_labels = random_case()
    expected = brute_force_metrics(query, query_labels, gallery, gallery_labels, KS)
    metrics = retrieval_metrics(query, query_labels, gallery, gallery_labels, ks=KS,
                                block_size=7)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name
    assert metrics["n_query"] == 23 and metrics["n_gallery"] == 40


def test_block_size_does_not_change_the_result():
    case = random_case()
    results = [retrieval_metrics(*case, ks=KS, block_size=b) for b in (1, 7, 23, 1024)]
    assert all(r == results[0] for r in results[1:])
    as_tensors = retrieval_metrics(*(torch.as_tensor(x) for x in case), ks=KS, block_size=5)
    assert as_tensors == results[0]


def hand_case():
    gallery = np.array([[1, 0], [0, 1], [1, 1], [1, 0]], dtype=np.float32)
    gallery_labels = np.array([0, 1, 1, 1])
    query = np.array([[1, 0.1], [0, 1], [-1, 0.5]], dtype=np.float32)
    query_labels = np.array([0, 1, 0])
    return query, query_labels, gallery, gallery_labels


def test_hand_computed_case():
    # Cosine similarities and rankings (g0 and g3 are identical: ties go to g0):
    # q0 (label 0): g0 .995 = g3 .995 > g2 .774 > g1 .100 → g0 ✓ g3 g2 g1; AP 1, R@1 hit.
    # q1 (label 1): g1 1 > g2 .707 > g0 0 = g3 0 → g1 ✓ g2 ✓ g0 g3 ✓; AP (1 + 1 + 3/4)/3.
    # q2 (label 0): g1 .447 > g2 -.316 > g0 -.894 = g3 → g1 g2 g0 ✓ g3; AP 1/3, R@1 miss.
    metrics = retrieval_metrics(*hand_case(), ks=(1, 2, 3))
    assert metrics["R@1"] == pytest.approx(100 * 2 / 3)
    assert metrics["R@2"] == pytest.approx(100 * 2 / 3)
    assert metrics["R@3"] == pytest.approx(100.0)
    assert metrics["mAP"] == pytest.approx(100 * (1 + 11 / 12 + 1 / 3) / 3)
    assert metrics["mAP"] == pytest.approx(75.0)


def test_nearest_neighbours_follow_the_ranking_rule():
    query, _, gallery, _ = hand_case()
    neighbours = nearest_neighbours(query, gallery, k=4, block_size=2)
    assert neighbours.tolist() == [[0, 3, 2, 1], [1, 2, 0, 3], [1, 2, 0, 3]]
    assert nearest_neighbours(query, gallery, k=10).shape == (3, 4)


def test_rejects_unlabeled_and_mismatched_inputs():
    query, query_labels, gallery, gallery_labels = hand_case()
    with pytest.raises(ValueError, match="unlabeled"):
        retrieval_metrics(query, np.array([0, -1, 0]), gallery, gallery_labels)
    with pytest.raises(ValueError, match="labels"):
        retrieval_metrics(query, query_labels[:2], gallery, gallery_labels)
    with pytest.raises(ValueError, match="-d"):
        retrieval_metrics(query, query_labels, gallery[:, :1], gallery_labels)


def test_eval_retrieval_script(tmp_path, capsys):
    query, query_labels, gallery, gallery_labels = random_case()
    query_labels = query_labels.copy()
    query_labels[5] = -1                     # an unlabeled query is left out
    save_features(tmp_path / "features_validation.npz", [f"q{i}" for i in range(23)],
                  query_labels, query)
    save_features(tmp_path / "features_training.npz", [f"g{i}" for i in range(40)],
                  gallery_labels, gallery)
    out = tmp_path / "out"
    out.mkdir()
    metrics = eval_retrieval.main(["--query", str(tmp_path / "features_validation.npz"),
                                   "--gallery", str(tmp_path / "features_training.npz"),
                                   "--result_path", str(out), "--block_size", "4",
                                   "--device", "cpu"])
    keep = query_labels >= 0
    expected = brute_force_metrics(query[keep], query_labels[keep], gallery, gallery_labels, SAVED_KS)
    written = json.loads((out / "retrieval.json").read_text())
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name
    assert {k for k in metrics if k.startswith("R@")} == {k for k in expected if k.startswith("R@")}
    assert (metrics["n_query"], metrics["n_gallery"]) == (22, 40)
    assert {k: written[k] for k in metrics} == metrics
    assert "| R@1 |" in capsys.readouterr().out


@pytest.mark.parametrize("content, words", [(None, "does not exist"), (b"garbage", "is not a features file"),
                                            ("folder", "is a folder, not a file: pass a features_<subset>.npz")])
def test_eval_retrieval_script_reports_a_missing_or_unreadable_file(tmp_path, capsys, content, words):
    features = tmp_path / "features_validation.npz"
    if content == "folder":
        features.mkdir()
    elif content is not None:
        features.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        eval_retrieval.main(["--query", str(features), "--gallery", str(features)])
    lines = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2
    assert len(lines) == 1 and lines[0].startswith(f"error: {features} {words}")


def test_eval_retrieval_script_names_a_result_file_it_cannot_write(tmp_path, capsys):
    query, query_labels, gallery, gallery_labels = random_case()
    save_features(tmp_path / "features_validation.npz", [f"q{i}" for i in range(23)],
                  query_labels, query)
    save_features(tmp_path / "features_training.npz", [f"g{i}" for i in range(40)],
                  gallery_labels, gallery)
    (tmp_path / "retrieval.json").mkdir()    # a folder where the file goes: the rename fails
    with pytest.raises(SystemExit) as exit_info:
        eval_retrieval.main(["--query", str(tmp_path / "features_validation.npz"),
                             "--gallery", str(tmp_path / "features_training.npz"),
                             "--device", "cpu"])
    lines = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'retrieval.json'}: ")
    assert lines[0].endswith("the metrics above were not saved")
    assert not list(tmp_path.glob("*.tmp"))


def tied_case(seed=0, n_gallery=120, n_query=37, n_classes=6):
    """Non-negative features in {0, 1, 2}^4, as the student's pooled ReLU outputs are: many
    exactly equal similarities (duplicate vectors, equal angles, disjoint supports), zero
    vectors (similarity 0 to everything), queries that copy gallery items, and classes 6
    and 7 that only queries have."""
    rng = np.random.default_rng(seed)
    gallery = rng.integers(0, 3, size=(n_gallery, 4)).astype(np.float32)
    gallery[:5] = 0.0
    gallery_labels = rng.integers(0, n_classes, size=n_gallery)
    query = rng.integers(0, 3, size=(n_query, 4)).astype(np.float32)
    query[:6] = 3 * gallery[10:16]
    query[6] = 0.0
    query_labels = rng.integers(0, n_classes + 2, size=n_query)
    return query, query_labels, gallery, gallery_labels


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("block_size", [1, 5, 1024])
def test_matches_brute_force_with_heavy_ties(seed, block_size):
    case = tied_case(seed)
    expected = brute_force_metrics(*case, KS)
    metrics = retrieval_metrics(*case, ks=KS, block_size=block_size)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name


def test_every_item_tied_ranks_in_gallery_order():
    # A collapsed model: one feature for every video. Ranks are then gallery positions.
    gallery = np.ones((10, 3), np.float32)
    gallery_labels = np.array([2, 0, 1, 0, 2, 2, 1, 0, 0, 1])
    query = np.ones((3, 3), np.float32)
    query_labels = np.array([0, 1, 3])
    metrics = retrieval_metrics(query, query_labels, gallery, gallery_labels, ks=(1, 2, 3))
    # Class 0 at ranks 2, 4, 8, 9; class 1 at 3, 7, 10; class 3 absent.
    ap0 = (1 / 2 + 2 / 4 + 3 / 8 + 4 / 9) / 4
    ap1 = (1 / 3 + 2 / 7 + 3 / 10) / 3
    assert metrics["R@1"] == 0.0
    assert metrics["R@2"] == pytest.approx(100 / 3)
    assert metrics["R@3"] == pytest.approx(200 / 3)
    assert metrics["mAP"] == pytest.approx(100 * (ap0 + ap1) / 3)


def test_duplicate_queries_and_gallery_items_with_random_features():
    rng = np.random.default_rng(3)
    gallery = rng.normal(size=(80, 16)).astype(np.float32)
    gallery[40:] = gallery[:40][rng.permutation(40)]       # every vector twice
    gallery_labels = rng.integers(0, 5, size=80)
    query = np.concatenate([gallery[rng.integers(0, 80, 10)], rng.normal(size=(10, 16))])
    query = np.concatenate([query, query[:5]]).astype(np.float32)    # repeated queries
    query_labels = rng.integers(0, 6, size=25)
    case = (query, query_labels, gallery, gallery_labels)
    expected = brute_force_metrics(*case, KS)
    for block_size in (2, 25):
        metrics = retrieval_metrics(*case, ks=KS, block_size=block_size)
        for name, value in expected.items():
            assert metrics[name] == pytest.approx(value, abs=1e-9), name


def test_tie_break_keys_order_like_a_stable_descending_sort():
    from evaluation.retrieval import _tie_break_keys
    values = torch.tensor([[0.5, -0.0, 0.0, -0.25, 0.5, -3.0, 2.0, -0.25, 0.0, 1e-30, -1e-30]])
    keys = _tie_break_keys(values)[0].tolist()
    expected = sorted(range(values.shape[1]), key=lambda j: (-float(values[0, j]), j))
    assert sorted(range(len(keys)), key=lambda j: -keys[j]) == expected
    assert len(set(keys)) == len(keys)


def test_rejects_non_finite_features():
    query, query_labels, gallery, gallery_labels = hand_case()
    gallery = gallery.copy()
    gallery[1, 0] = np.nan
    with pytest.raises(ValueError, match="gallery_feats contain NaN or inf"):
        retrieval_metrics(query, query_labels, gallery, gallery_labels)


@pytest.mark.cuda
def test_cuda_gives_the_brute_force_metrics():
    for case in (random_case(), tied_case(1)):
        expected = brute_force_metrics(*case, KS)
        metrics = retrieval_metrics(*case, ks=KS, block_size=8, device="cuda")
        for name, value in expected.items():
            assert metrics[name] == pytest.approx(value, abs=1e-9), name


def test_same_class_duplicates_rank_in_gallery_order_without_tie_keys(monkeypatch):
    # Duplicates that share their label (the same video listed twice) tie only with each
    # other: their ranks follow from the sorted values, no query needs the tie-break keys.
    from evaluation import retrieval
    rng = np.random.default_rng(4)
    gallery = rng.normal(size=(60, 8)).astype(np.float32)
    gallery_labels = rng.integers(0, 4, size=60)
    gallery[30:] = gallery[:30]
    gallery_labels[30:] = gallery_labels[:30]
    query = np.concatenate([gallery[:6], rng.normal(size=(9, 8))]).astype(np.float32)
    query_labels = rng.integers(0, 4, size=15)
    case = (query, query_labels, gallery, gallery_labels)
    expected = brute_force_metrics(*case, KS)
    monkeypatch.setattr(retrieval, "_tie_break_keys", None)
    metrics = retrieval_metrics(*case, ks=KS, block_size=4)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name


def copies_case(seed=5):
    """Gallery vectors copied 2-4 times under other labels (a video listed in several
    classes, zero vectors): exact ties across classes between copies only."""
    rng = np.random.default_rng(seed)
    gallery = rng.normal(size=(200, 16)).astype(np.float32)
    gallery_labels = rng.integers(0, 5, size=200)
    sources = rng.permutation(100)[:30]
    targets = 100 + rng.permutation(100)
    for n, source in enumerate(sources):             # 30 groups of 2, 3 or 4 copies
        for target in targets[3 * n:3 * n + 1 + n % 3] if 3 * n < 100 else []:
            gallery[target] = gallery[source]
    gallery[[150, 180, 190]] = 0.0                    # zero vectors: similarity 0 to all
    query = np.concatenate([3 * gallery[sources[:8]], rng.normal(size=(12, 16))])
    query_labels = rng.integers(0, 6, size=20)
    return query.astype(np.float32), query_labels, gallery, gallery_labels


def test_ties_between_copies_are_counted_among_the_copies(monkeypatch):
    from evaluation import retrieval
    case = copies_case()
    expected = brute_force_metrics(*case, KS)
    # Neither the row scan nor the tie-break keys: every tie is resolved among the copies.
    monkeypatch.setattr(retrieval, "_equal_before", None)
    monkeypatch.setattr(retrieval, "_tie_break_keys", None)
    for block_size in (3, 20):
        metrics = retrieval_metrics(*case, ks=KS, block_size=block_size)
        for name, value in expected.items():
            assert metrics[name] == pytest.approx(value, abs=1e-9), name


def test_ties_between_distinct_vectors_are_scanned():
    # No vector twice: the equal similarities come from equal angles, so no group of
    # copies holds them and each row is scanned.
    gallery = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [2, 3, 1]],
                       np.float32)
    gallery_labels = np.array([0, 1, 0, 1, 2, 2])
    query = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], np.float32)
    query_labels = np.array([1, 0, 2])
    case = (query, query_labels, gallery, gallery_labels)
    expected = brute_force_metrics(*case, (1, 2, 3))
    metrics = retrieval_metrics(*case, ks=(1, 2, 3))
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name


def test_groups_of_copies_above_the_limit_are_scanned(monkeypatch):
    from evaluation import retrieval
    case = copies_case()
    expected = brute_force_metrics(*case, KS)
    monkeypatch.setattr(retrieval, "COPY_GROUP_LIMIT", 2)
    scanned = []
    equal_before = retrieval._equal_before
    monkeypatch.setattr(retrieval, "_equal_before",
                        lambda *args: scanned.append(1) or equal_before(*args))
    metrics = retrieval_metrics(*case, ks=KS, block_size=4)
    assert scanned
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name


def test_sorted_rows_match_torch_sort_into_the_given_storage():
    from evaluation.retrieval import _sorted_rows
    g = torch.Generator().manual_seed(0)
    for x in (torch.randn(7, 1000, generator=g), torch.randn(1, 5, generator=g),
              torch.randint(-2**60, 2**60, (5, 100), generator=g)):
        assert torch.equal(_sorted_rows(x), torch.sort(x, dim=1).values)
        storage = torch.empty_like(x)
        result = _sorted_rows(x, storage)
        assert torch.equal(storage, torch.sort(x, dim=1).values)
        assert result.data_ptr() == storage.data_ptr()
