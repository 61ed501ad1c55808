"""The scale benchmarks run at tiny sizes, print their JSON lines, and their reference
implementations agree with ours (each is an independent oracle of the metrics)."""
import json

import numpy as np
import pytest

from benchmarks import bench_inference, bench_retrieval, bench_startup
from evaluation.retrieval import retrieval_metrics


def closest_relevant_irrelevant_pair(query, query_labels, gallery, gallery_labels) -> float:
    """The smallest float64 cosine-similarity gap between a query's relevant gallery item
    and an irrelevant one ranked next to it."""
    def unit(x):
        x = x.astype(np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    similarity = unit(query) @ unit(gallery).T
    gaps = []
    for row, label in zip(similarity, query_labels):
        order = np.argsort(-row)
        relevant = gallery_labels[order] == label
        gaps.append((-np.diff(row[order]))[relevant[:-1] != relevant[1:]].min())
    return float(min(gaps))


@pytest.mark.parametrize("duplicates", [0.0, 0.3])
def test_retrieval_references_agree_with_ours(duplicates):
    args = bench_retrieval.parse_args(["--gallery", "400", "--queries", "60", "--dim", "8",
                                       "--classes", "7", "--duplicates", str(duplicates)])
    case = bench_retrieval.make_case(args)
    ours = retrieval_metrics(*case, ks=bench_retrieval.KS, block_size=16)
    # argsort follows the same tie rule; the values references ignore ties, which random
    # features without duplicates do not have. The float32 reference ranks on float32
    # products: each off by at most D·2^-24 ≈ 5e-7 (unit vectors), so it agrees only where
    # every relevant item is further than twice that from the irrelevant ones next to it.
    references = [bench_retrieval.argsort_metrics(*case, 16)]
    if duplicates == 0.0:
        assert closest_relevant_irrelevant_pair(*case) > 2 * args.dim * 2.0 ** -24
        references += [bench_retrieval.values_metrics(*case, 16, np.float64),
                       bench_retrieval.values_metrics(*case, 16)]
    for reference in references:
        for name, value in reference.items():
            assert ours[name] == pytest.approx(value, abs=1e-9), name


def test_retrieval_benchmark_prints_a_line_per_implementation_and_a_comparison(capsys):
    assert bench_retrieval.main(["--gallery", "300", "--queries", "40", "--dim", "8",
                                 "--impls", "ours", "argsort"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line.get("impl") for line in lines[:2]] == ["ours", "argsort"]
    assert {"seconds", "peak_rss_gb", "rss_growth_gb", "R@1", "mAP"} <= lines[0].keys()
    assert lines[2]["max_metric_difference"] == {"argsort": 0.0}


def test_startup_benchmark_builds_then_uses_the_cache(tmp_path, capsys):
    assert bench_startup.main(["--videos", "30", "--rows", "3", "--dim", "16",
                               "--root", str(tmp_path)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["impl"] for line in lines] == ["original", "ours_first", "ours_cached"]
    assert all(line["videos"] == 30 and line["seconds"] > 0 for line in lines)
    assert lines[1]["audio_dim"] == lines[2]["audio_dim"] == 16
    audio = bench_startup.data_folder(bench_startup.parse_args(
        ["--videos", "30", "--rows", "3", "--dim", "16", "--root", str(tmp_path)])) / "audio"
    assert (audio / ".ccl_cache").is_dir() and len(list(audio.rglob("*.npy"))) == 30


def test_inference_benchmark_reports_time_and_memory(capsys):
    assert bench_inference.main(["--make_synthetic", "2", "--frames", "12", "--sample_size", "16",
                                 "--sample_duration", "4", "--n_threads", "0",
                                 "--cases", "ours:0", "original"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["case"], line["batch_size"]) for line in lines] == [("ours:0", 8),
                                                                     ("original", "video")]
    for line in lines:
        # 12 frames at the default --inference_stride 16: one loop-padded window a video.
        assert line["n_videos"] == 2 and line["n_windows"] == 2
        assert line["peak_rss_gb"] > 0 and line["seconds"] > 0
