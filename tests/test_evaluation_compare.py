"""The comparison report of several result directories, on hand-made result folders whose
numbers are known."""
import json
import statistics

import pytest

from evaluation import compare, report
from util_scripts import eval_accuracy

CLASSES = ["jump", "run", "swim"]
# Ground truth of the validation subset: six videos, two per class, and one training video.
GROUND_TRUTH = {"v0": "jump", "v1": "jump", "v2": "run", "v3": "run", "v4": "swim", "v5": "swim"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_annotation(path):
    database = {v: {"subset": "validation", "annotations": {"label": label, "segment": [1, 17]}}
                for v, label in GROUND_TRUTH.items()}
    database["t0"] = {"subset": "training", "annotations": {"label": "run", "segment": [1, 17]}}
    path.write_text(json.dumps({"labels": CLASSES, "database": database}))
    return path


def write_val_json(folder, top1: dict[str, str]):
    """val.json whose highest score per video is `top1[video]`; the other classes follow with
    lower scores, listed first so that the order in the file is not the order of scores."""
    results = {}
    for video, best in top1.items():
        others = [c for c in CLASSES if c != best]
        results[video] = [{"label": others[0], "score": 0.2}, {"label": others[1], "score": 0.1},
                          {"label": best, "score": 0.7}]
    (folder / "val.json").write_text(json.dumps({"version": "1", "results": results}))


def make_run(root, name, annotation, use_audio=False, use_image=False, seed=1, **extra):
    folder = root / name
    folder.mkdir(parents=True)
    options = {"annotation_path": str(annotation), "result_path": str(folder), "use_audio": use_audio,
               "use_image": use_image, "manual_seed": seed, "learning_rate": 0.01, "n_threads": 4,
               "milestones": [150, 225], "resume_path": str(folder / "save_300.pth")}
    (folder / "opts.json").write_text(json.dumps(options | extra))
    return folder


def write_retrieval(folder, metrics):
    (folder / "retrieval.json").write_text(json.dumps({**metrics, "n_query": 6, "n_gallery": 9}))


def table_rows(text, first_header):
    """{first cell: {header: cell}} of the markdown table whose first header is `first_header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


@pytest.fixture
def runs(tmp_path):
    """Four runs of known numbers under tmp_path/results, and the annotation."""
    annotation = write_annotation(tmp_path / "annotation.json")
    root = tmp_path / "results"
    baseline = make_run(root, "baseline_seed1", annotation, seed=1)
    # v1 and v5 wrong: 4 of 6 right.
    write_val_json(baseline, {"v0": "jump", "v1": "run", "v2": "run", "v3": "run", "v4": "swim", "v5": "jump"})
    write_retrieval(baseline, {"R@1": 50.0, "R@5": 66.66666, "R@10": 100.0, "R@20": 100.0, "mAP": 41.125})
    baseline2 = make_run(root, "baseline_seed2", annotation, seed=2, n_threads=0)
    # v5 has no prediction: left out of the count (--ignore), 5 of 5 right.
    write_val_json(baseline2, {"v0": "jump", "v1": "jump", "v2": "run", "v3": "run", "v4": "swim"})
    write_retrieval(baseline2, {"R@1": 70.0, "R@5": 80.0, "R@10": 90.0, "R@20": 100.0, "mAP": 60.0})
    audio = make_run(root, "ccl_a_seed1", annotation, use_audio=True, seed=1)
    # 1 of 6 right; no retrieval.json.
    write_val_json(audio, {"v0": "jump", "v1": "run", "v2": "swim", "v3": "jump", "v4": "run", "v5": "run"})
    both = make_run(root, "ccl_ai_seed1", annotation, use_audio=True, use_image=True, seed=1)
    # No val.json; a retrieval.json without R@20.
    write_retrieval(both, {"R@1": 33.5, "R@5": 40.0, "R@10": 45.0, "mAP": 20.25})
    return annotation, [baseline, baseline2, audio, both]


EXPECTED = {  # percent; None: missing
    "`baseline_seed1`": {"top-1": 100 * 4 / 6, "R@1": 50.0, "R@5": 66.66666, "R@10": 100.0, "R@20": 100.0,
                         "mAP": 41.125},
    "`baseline_seed2`": {"top-1": 100.0, "R@1": 70.0, "R@5": 80.0, "R@10": 90.0, "R@20": 100.0, "mAP": 60.0},
    "`ccl_a_seed1`": {"top-1": 100 * 1 / 6, **dict.fromkeys(compare.RETRIEVAL_METRICS)},
    "`ccl_ai_seed1`": {"top-1": None, "R@1": 33.5, "R@5": 40.0, "R@10": 45.0, "R@20": None, "mAP": 20.25},
}


def expected_cell(value):
    return "missing" if value is None else f"{value:.2f}"


def test_table_holds_each_runs_numbers_and_marks_missing_ones(runs, tmp_path):
    _, folders = runs
    path = compare.write_comparison(folders)
    assert path == tmp_path / "results" / "report.md"
    rows = table_rows(path.read_text(), "run")
    assert set(rows) == set(EXPECTED)
    for name, metrics in EXPECTED.items():
        for metric, value in metrics.items():
            assert rows[name][metric] == expected_cell(value), (name, metric)
    assert [rows[name]["configuration"] for name in EXPECTED] == ["baseline", "baseline", "CCL (A)", "CCL (AI)"]


def test_top1_is_the_one_of_eval_accuracy_and_of_the_single_run_report(runs, capsys):
    annotation, folders = runs
    compared = {run.name: run.metrics["top-1"] for run in compare.read_runs(folders)}
    for folder in folders[:3]:
        result = eval_accuracy.main([str(annotation), str(folder / "val.json"), "--subset", "validation",
                                     "-k", "1", "--ignore"])
        assert compared[folder.name] == pytest.approx(100 * result.accuracy, abs=1e-12)
        single = report.main(["--result_path", str(folder), "--annotation_path", str(annotation)]).read_text()
        assert f"| video top-1 accuracy (val.json) | {compared[folder.name]:.2f} % |" in single


def test_mean_and_std_over_seeds_of_each_configuration(runs):
    _, folders = runs
    text = compare.write_comparison(folders).read_text()
    groups = table_rows(text.split("## Mean ± std over seeds")[1], "configuration")
    assert set(groups) == {"baseline", "CCL (A)", "CCL (AI)"}
    assert groups["baseline"]["runs"] == "2"
    first, second = EXPECTED["`baseline_seed1`"], EXPECTED["`baseline_seed2`"]
    for metric in compare.METRICS:
        values = [first[metric], second[metric]]
        assert groups["baseline"][metric] == f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
    assert groups["CCL (A)"]["top-1"] == f"{100 / 6:.2f}"
    assert groups["CCL (A)"]["R@1"] == "missing"


def test_mean_of_a_metric_some_seeds_lack_says_how_many_runs_it_is_over(tmp_path):
    annotation = write_annotation(tmp_path / "annotation.json")
    first = make_run(tmp_path, "a1", annotation, seed=1)
    second = make_run(tmp_path, "a2", annotation, seed=2)
    write_retrieval(first, {"R@1": 10.0})
    groups = compare.group_by_configuration(compare.read_runs([first, second]), ["--manual_seed"])
    assert [(label, [r.name for r in members]) for label, members in groups] == [("baseline", ["a1", "a2"])]
    text = "\n".join(compare.comparison_lines(compare.read_runs([first, second])))
    assert "| baseline | 2 | missing | 10.00 (1 of 2 runs) |" in text


def test_differing_options_are_found_exactly(runs):
    _, folders = runs
    loaded = compare.read_runs(folders)
    # result_path and resume_path differ only by the run's own folder; n_threads differs
    # (4 and 0) but cannot change the numbers; annotation_path, learning_rate and
    # milestones are the same everywhere.
    assert compare.differing_options(loaded) == ["--use_audio", "--use_image", "--manual_seed"]
    assert loaded[0].options["--result_path"] == "<run>"
    assert "--n_threads" not in loaded[0].options
    rows = table_rows(compare.write_comparison(folders).read_text().split("## Options that differ")[1], "run")
    assert rows["`ccl_ai_seed1`"] == {"run": "`ccl_ai_seed1`", "`--use_audio`": "true", "`--use_image`": "true",
                                      "`--manual_seed`": "1"}


def test_an_option_one_run_lacks_or_a_changed_list_differs(tmp_path):
    annotation = write_annotation(tmp_path / "annotation.json")
    first = make_run(tmp_path, "first", annotation)
    second = make_run(tmp_path, "second", annotation, milestones=[100, 200], exact=True)
    (second / "eval_opts.json").write_text(json.dumps({"inference_stride": 16, "n_threads": 2}))
    loaded = compare.read_runs([first, second])
    assert compare.differing_options(loaded) == ["--milestones", "--exact", "eval_opts.json: --inference_stride"]
    rows = table_rows("\n".join(compare.comparison_lines(loaded)).split("## Options that differ")[1], "run")
    assert rows["`first`"]["`--exact`"] == "absent"
    assert rows["`second`"]["`--milestones`"] == "[100, 200]"


def test_a_run_evaluated_by_its_training_run_compares_with_an_evaluation_only_run(tmp_path):
    # The demo's runs evaluate in their training run; a script's evaluation-only run records
    # every option in eval_opts.json. Only the evaluation options that really differ show.
    annotation = write_annotation(tmp_path / "annotation.json")
    demo = make_run(tmp_path, "demo", annotation, inference_stride=8, no_train=False)
    script = make_run(tmp_path, "script", annotation, inference_stride=8, no_train=False)
    trained_with = json.loads((script / "opts.json").read_text())
    (script / "eval_opts.json").write_text(json.dumps(trained_with | {"no_train": True, "inference_stride": 16}))
    loaded = compare.read_runs([demo, script])
    assert compare.differing_options(loaded) == ["eval_opts.json: --inference_stride", "eval_opts.json: --no_train"]
    rows = table_rows("\n".join(compare.comparison_lines(loaded)).split("## Options that differ")[1], "run")
    assert rows["`demo`"] == {"run": "`demo`", "`eval_opts.json: --inference_stride`": "8",
                              "`eval_opts.json: --no_train`": "false"}
    assert rows["`script`"]["`eval_opts.json: --inference_stride`"] == "16"


def test_whether_a_run_resumed_or_ran_inference_and_retrieval_is_no_difference(tmp_path):
    # A resume continues the same training (checked when it starts); a metric a run did not
    # compute shows as missing in the table.
    annotation = write_annotation(tmp_path / "annotation.json")
    first = make_run(tmp_path, "first", annotation, resume_path=None, inference=True, retrieval=True,
                     output_topk=5, allow_changed_options=False)
    second = make_run(tmp_path, "second", annotation, resume_path="/elsewhere/save_100.pth", inference=False,
                      retrieval=False, output_topk=1, allow_changed_options=True, n_epochs=200)
    assert compare.differing_options(compare.read_runs([first, second])) == ["--n_epochs"]


def test_a_run_moved_since_training_still_compares_its_own_paths_equal(tmp_path):
    annotation = write_annotation(tmp_path / "annotation.json")
    first = make_run(tmp_path, "first", annotation)
    second = make_run(tmp_path, "second", annotation)
    options = json.loads((second / "opts.json").read_text())
    options |= {"result_path": "/elsewhere/second", "resume_path": "/elsewhere/second/save_300.pth"}
    (second / "opts.json").write_text(json.dumps(options))
    assert compare.differing_options(compare.read_runs([first, second])) == []
    text = "\n".join(compare.comparison_lines(compare.read_runs([first, second])))
    assert "None: every compared option is the same in every run." in text


def test_a_folder_that_is_not_a_result_folder_is_a_one_line_error(runs, tmp_path, capsys):
    _, folders = runs
    stray = tmp_path / "results" / "data"
    stray.mkdir()
    for bad, words in ((stray, "is not a result folder"), (tmp_path / "nowhere", "is not a folder"),
                       (folders[0], "is given twice")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            report.main(["--compare", *map(str, folders), str(bad)])
        message = capsys.readouterr().err.rstrip("\n")
        assert exit_info.value.code == 2
        assert message.startswith("error: ") and "\n" not in message
        assert str(bad) in message and words in message
    assert not (tmp_path / "results" / "report.md").exists()


def test_annotation_override_and_a_missing_annotation(runs, tmp_path):
    annotation, folders = runs
    moved = annotation.rename(tmp_path / "moved.json")
    with pytest.raises(ValueError, match="--annotation_path") as error:
        compare.read_runs(folders)
    assert "\n" not in str(error.value) and str(folders[0] / "val.json") in str(error.value)
    loaded = compare.read_runs(folders, annotation_path=moved)
    assert [run.metrics["top-1"] for run in loaded] == pytest.approx([400 / 6, 100.0, 100 / 6, None])


def test_command_line_writes_the_report_and_a_png_where_asked(runs, tmp_path, capsys):
    _, folders = runs
    out = tmp_path / "comparison"
    path = report.main(["--compare", *map(str, folders), "--out", str(out)])
    assert path == out / "report.md"
    assert "![top-1, R@k and mAP per run](comparison.png)" in path.read_text()
    assert (out / "comparison.png").read_bytes()[:8] == PNG_SIGNATURE
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--compare", *map(str, folders), "--out", str(folders[0])])
    assert exit_info.value.code == 2 and "is a result folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):                 # argparse: --out needs --compare
        report.main(["--result_path", str(folders[0]), "--out", str(out)])


def test_configuration_names():
    assert [compare.configuration({"use_audio": a, "use_image": i}, "opts.json")
            for a, i in ((False, False), (True, False), (False, True), (True, True))] == \
        ["baseline", "CCL (A)", "CCL (I)", "CCL (AI)"]
    with pytest.raises(ValueError, match="use_audio"):
        compare.configuration({"use_audio": True}, "x/opts.json")


def test_groups_of_one_configuration_are_labelled_by_what_tells_them_apart(tmp_path):
    annotation = write_annotation(tmp_path / "annotation.json")
    folders = [make_run(tmp_path, f"lr{lr}_seed{seed}", annotation, use_audio=True, seed=seed, learning_rate=lr)
               for lr in (0.01, 0.1) for seed in (1, 2)]
    folders.append(make_run(tmp_path, "base", annotation))
    loaded = compare.read_runs(folders)
    groups = compare.group_by_configuration(loaded, compare.differing_options(loaded))
    assert [(label, [r.name for r in members]) for label, members in groups] == [
        ("CCL (A) (--learning_rate 0.01)", ["lr0.01_seed1", "lr0.01_seed2"]),
        ("CCL (A) (--learning_rate 0.1)", ["lr0.1_seed1", "lr0.1_seed2"]),
        ("baseline", ["base"])]
