"""The end-to-end benchmark trains through main.py and reports its last train.log row."""
import csv
from pathlib import Path

import pytest

from benchmarks import bench_end_to_end

TINY = ["--make_synthetic", "8", "--synthetic_frames", "12", "--batch_size", "3", "--device", "cpu",
        "--sample_size", "32", "--sample_duration", "4", "--epochs", "2"]


def test_reports_the_last_epoch_of_the_run(tmp_path):
    args = bench_end_to_end.parse_args([*TINY, "--config", "a", "--n_threads", "1"])
    record = bench_end_to_end.run(args, tmp_path)
    with open(tmp_path / "run" / "train.log", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 2 and record["epoch"] == 2
    assert record["clips_per_s"] == float(rows[-1]["clips_per_s"]) > 0
    assert record["data_wait"] == float(rows[-1]["data_wait"])
    assert (record["config"], record["mode"], record["image_teacher"]) == ("a", "default", "none")
    assert "audio/contrast" in rows[-1]  # the audio teacher was on


@pytest.mark.parametrize("config, flags", [("base", []), ("a", ["--use_audio"]),
                                           ("i", ["--use_image"]), ("ai", ["--use_audio", "--use_image"])])
def test_configs_map_to_main_options(tmp_path, config, flags):
    annotation = tmp_path / "a.json"
    annotation.write_text('{"labels": ["x", "y", "z"], "database": {}}')
    common = ["--video_path", str(tmp_path), "--annotation_path", str(annotation),
              "--audio_path", str(tmp_path), "--config", config, "--device", "cpu"]
    options = bench_end_to_end.main_options(
        bench_end_to_end.parse_args([*common, "--compile"]), Path("out"))
    assert [o for o in options if o in ("--use_audio", "--use_image")] == flags
    assert options[options.index("--n_classes") + 1] == "3"
    assert "--compile" in options and "--no_val" in options
    assert ("--allow_untrained_teacher" in options) == ("--use_image" in flags)
    with_weights = bench_end_to_end.main_options(bench_end_to_end.parse_args(
        [*common, "--image_teacher_weights", str(tmp_path / "r34.pth")]), Path("out"))
    assert "--allow_untrained_teacher" not in with_weights


def test_gpu_decode_is_passed_to_main(tmp_path):
    annotation = tmp_path / "a.json"
    annotation.write_text('{"labels": ["x"], "database": {}}')
    common = ["--video_path", str(tmp_path), "--annotation_path", str(annotation), "--config", "base",
              "--device", "cpu"]
    for flags in ([], ["--gpu_decode"]):
        options = bench_end_to_end.main_options(bench_end_to_end.parse_args([*common, *flags]), Path("out"))
        assert ("--gpu_decode" in options) == bool(flags)
