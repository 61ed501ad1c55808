"""Progress output: a live bar on a terminal, one line per pass anywhere else."""
import io

from datasets.loader import batches
from datasets.progress import Progress, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_into_a_file_one_line_per_pass_and_no_redraws():
    stream = io.StringIO()
    for epoch in (1, 2):
        assert list(progress(range(300), f"train {epoch}", stream=stream)) == list(range(300))
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 2
    assert lines[0].startswith("train 1: 300 batches in ") and lines[1].startswith("train 2: 300 batches in ")


def test_on_a_terminal_a_live_bar():
    stream = Terminal()
    assert list(progress(range(300), "train 1", stream=stream)) == list(range(300))
    assert "\r" in stream.getvalue() and "train 1" in stream.getvalue()


def test_manual_updates_and_hidden_progress():
    stream = io.StringIO()
    with Progress("hdf5", total=3, unit="video", stream=stream) as bar:
        for _ in range(3):
            bar.update()
    assert stream.getvalue().startswith("hdf5: 3 videos in ")
    hidden = io.StringIO()
    assert list(progress([1, 2], "rank 1", show=False, stream=hidden)) == [1, 2] and hidden.getvalue() == ""


def test_loader_batches_print_one_line_when_stderr_is_not_a_terminal(capsys):
    assert list(batches([{"clip": 1}, {"clip": 2}], "val")) == [{"clip": 1}, {"clip": 2}]
    err = capsys.readouterr().err
    assert err.startswith("val: 2 batches in ") and err.count("\n") == 1 and "\r" not in err
