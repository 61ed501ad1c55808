"""util_scripts/eval_accuracy.py on a hand-made annotation / val.json pair."""
import json

import pytest

from util_scripts import eval_accuracy


@pytest.fixture
def files(tmp_path):
    database = {
        "v1": {"subset": "validation", "annotations": {"label": "a", "segment": [1, 17]}},
        "v2": {"subset": "validation", "annotations": {"label": "b", "segment": [1, 17]}},
        "v3": {"subset": "validation", "annotations": {"label": "c", "segment": [1, 17]}},
        "v4": {"subset": "validation", "annotations": {"label": "a", "segment": [1, 17]}},
        "t1": {"subset": "training", "annotations": {"label": "b", "segment": [1, 17]}},
        "u1": {"subset": "validation", "annotations": {}},
    }
    ground_truth = tmp_path / "gt.json"
    ground_truth.write_text(json.dumps({"labels": ["a", "b", "c"], "database": database}))

    def entries(**scores):
        return [{"label": label, "score": score} for label, score in scores.items()]
    # Lists longer than k and not sorted by score; v4 has no prediction; x9 is not in GT.
    results = {
        "v1": entries(b=0.2, a=0.7, c=0.1),    # top-1 right
        "v2": entries(a=0.5, c=0.1, b=0.4),    # right only at top-2
        "v3": entries(a=0.6, b=0.3, c=0.1),    # right only at top-3
        "x9": entries(a=1.0),
    }
    val_json = tmp_path / "val.json"
    val_json.write_text(json.dumps({"results": results}))
    return ground_truth, val_json


@pytest.mark.parametrize("k, ignore, n_ground_truth, n_correct", [
    (1, True, 3, 1), (1, False, 4, 1), (2, True, 3, 2), (2, False, 4, 2), (3, False, 4, 3)])
def test_top_k_accuracy(files, capsys, k, ignore, n_ground_truth, n_correct):
    ground_truth, val_json = files
    argv = [str(ground_truth), str(val_json), "--subset", "validation", "-k", str(k), "--allow_unknown_ids"]
    result = eval_accuracy.main(argv + (["--ignore"] if ignore else []))
    assert (result.n_ground_truth, result.n_correct) == (n_ground_truth, n_correct)
    assert result.accuracy == pytest.approx(n_correct / n_ground_truth)
    out, err = capsys.readouterr()
    assert f"top-{k} accuracy: {n_correct / n_ground_truth}" in out
    assert err.splitlines() == ["warning: 1 of 4 predicted ids are not videos of subset 'validation' and are "
                                "left out (--allow_unknown_ids; first: x9)"]


def user_error(capsys, argv: list[str]) -> str:
    """eval_accuracy.py's stderr for a user's mistake, which must end it with exit code 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        eval_accuracy.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.rstrip("\n")


def test_predictions_of_unknown_ids_are_an_error_naming_them(files, capsys):
    ground_truth, val_json = files
    text = user_error(capsys, [str(ground_truth), str(val_json), "-k", "1", "--ignore"])
    assert text.startswith(f"error: {val_json}: 1 of 4 predicted ids are not videos of subset 'validation'")
    assert "x9" in text and "--allow_unknown_ids" in text and "\n" not in text


@pytest.mark.parametrize("ignore", [True, False])
def test_no_prediction_for_any_ground_truth_video_is_an_error_not_zero(files, ignore, capsys):
    ground_truth, val_json = files
    # A val.json of another split: every id is a training video, none a validation one.
    val_json.write_text(json.dumps({"results": {"t1": [{"label": "b", "score": 1.0}]}}))
    argv = [str(ground_truth), str(val_json), "-k", "1", "--allow_unknown_ids"] + (["--ignore"] if ignore else [])
    lines = user_error(capsys, argv).splitlines()
    # The warning --allow_unknown_ids promises comes first: it says why nothing is left.
    assert lines[0] == ("warning: 1 of 1 predicted ids are not videos of subset 'validation' and are left out "
                        "(--allow_unknown_ids; first: t1)")
    assert len(lines) == 2 and lines[1].startswith("error: no ground-truth video has a prediction")


def test_save_writes_the_accuracy_beside_val_json(files):
    ground_truth, val_json = files
    eval_accuracy.main([str(ground_truth), str(val_json), "-k", "2", "--ignore", "--save", "--allow_unknown_ids"])
    assert float((val_json.parent / "val_top2.txt").read_text()) == pytest.approx(2 / 3)


@pytest.mark.parametrize("change, message", [
    (lambda gt, val: [str(gt.parent / "missing.json"), str(val)], "missing.json"),
    (lambda gt, val: [str(gt), str(val), "--subset", "testing"], "subset 'testing'"),
    (lambda gt, val: [str(val), str(val)], "annotation JSON"),
    (lambda gt, val: [str(gt.parent), str(val)], "annotation file /"),
    (lambda gt, val: [str(gt.parent), str(val)], " is a folder, not a file: pass a JSON annotation file"),
    (lambda gt, val: [str(gt), str(val.parent)], " is a folder, not a file: pass a val.json written by inference"),
])
def test_user_errors_exit_with_one_line(files, change, message, capsys):
    text = user_error(capsys, change(*files))
    assert text.startswith("error:") and message in text and "\n" not in text
