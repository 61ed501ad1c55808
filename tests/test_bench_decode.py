"""The decode benchmark prints one JSON line per cell (a smoke test: the figures are timings)."""
import json

from benchmarks import bench_decode


def test_prints_one_line_per_cpu_cell(capsys):
    bench_decode.main(["--device", "cpu", "--batch_size", "2", "--cpu_batch_size", "2",
                       "--sample_duration", "3", "--sample_size", "32", "--repeats", "1", "--pool", "4"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["stage"] for line in lines] == ["jpeg", "clips", "worker"]
    for line in lines:
        assert line["device"] == "cpu" and line["frames_per_batch"] == 6 and line["frames_per_s"] > 0
