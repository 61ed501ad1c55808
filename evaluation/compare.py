"""`report.md` and a figure comparing several result directories (DESIGN.md result directory):
video top-1, retrieval R@k and mAP per run, and the options that differ between the runs.

    python -m evaluation.report --compare DIR [DIR ...] [--out OUT_DIR] [--annotation_path JSON]

Top-1 is computed from each folder's `val.json` and its annotation exactly as the single-run
report and `util_scripts/eval_accuracy.py GT val.json --subset validation -k 1 --ignore` do;
R@k and mAP are read from `retrieval.json`. A metric whose file is absent is missing, never 0.
"""
import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evaluation import plots
from evaluation.accuracy import load_ground_truth, load_predictions, top_k_accuracy
from evaluation.markdown import table
from training.files import write_atomically

METRICS = ("top-1", "R@1", "R@5", "R@10", "R@20", "mAP")
RETRIEVAL_METRICS = METRICS[1:]
# Options that cannot change a run's numbers: loader workers (every item carries its own
# seed, datasets.loader), TensorBoard, report.md, how often checkpoints are saved, whether
# and from which checkpoint a run resumed (a resume continues the same training, checked
# when it starts), whether inference and retrieval ran (a metric a run lacks shows as
# missing), and how many classes val.json lists per video (top-1 reads the first).
IGNORED_OPTIONS = ("n_threads", "tensorboard", "report", "checkpoint", "auto_resume", "resume_path",
                   "allow_changed_options", "inference", "retrieval", "output_topk")
# The option that tells repeated runs of one configuration apart.
SEED_OPTION = "--manual_seed"
RUN_FOLDER = "<run>"
EVAL_OPTIONS = "eval_opts.json: "
MISSING = "missing"
ABSENT = "absent"
FIGURE = "comparison.png"


@dataclass
class Run:
    """One result directory.

    name: its path relative to the compared folders' common parent.
    configuration: "baseline", "CCL (A)", "CCL (I)" or "CCL (AI)" (opts.json's teachers).
    options: {"--name": value} of opts.json, and {"eval_opts.json: --name": value} of an
        evaluation-only run's options; strings inside the run's own folder read `<run>/...`.
        Compared through `option_value`.
    metrics: {metric: percent or None (missing)} for every name in METRICS.
    """
    path: Path
    name: str
    configuration: str
    options: dict[str, object]
    metrics: dict[str, float | None]


def configuration(options: dict, source: Path) -> str:
    """The configuration's name as the paper and the demo print it, from --use_audio/--use_image."""
    if "use_audio" not in options or "use_image" not in options:
        raise ValueError(f"{source} lacks use_audio or use_image: is it an opts.json written by main.py?")
    teachers = "A" * bool(options["use_audio"]) + "I" * bool(options["use_image"])
    return f"CCL ({teachers})" if teachers else "baseline"


def _read_options(path: Path) -> dict:
    try:
        options = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(options, dict):
        raise ValueError(f"{path} does not hold an object of options")
    return options


def _relocated(value: object, folders: Sequence[str]) -> object:
    """`value` with any of `folders` (the run's own folder, as recorded and as found) at the
    start of a path string written as `<run>`, so that such paths compare equal across runs."""
    if not isinstance(value, str):
        return value
    for folder in folders:
        if value == folder or value.startswith(folder + os.sep):
            return RUN_FOLDER + value[len(folder):]
    return value


def _run_options(path: Path, opts: dict) -> dict[str, object]:
    folders = [str(path.resolve()), str(path.absolute())]
    if isinstance(opts.get("result_path"), str):
        folders.insert(0, opts["result_path"].rstrip(os.sep))
    options = {f"--{name}": _relocated(value, folders) for name, value in opts.items()
               if name not in IGNORED_OPTIONS}
    eval_path = path / "eval_opts.json"
    if eval_path.is_file():
        options |= {f"{EVAL_OPTIONS}--{name}": _relocated(value, folders)
                    for name, value in _read_options(eval_path).items() if name not in IGNORED_OPTIONS}
    return options


def check_result_folders(paths: Sequence[Path | str]) -> list[Path]:
    """The folders as Paths; a ValueError naming the first that is not a training run's result
    folder (one with opts.json) or that is given twice. Reads nothing else."""
    folders = [Path(p) for p in paths]
    if not folders:
        raise ValueError("no result folder to compare")
    seen: dict[Path, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder (pass result folders written by main.py --result_path)")
        if not (folder / "opts.json").is_file():
            raise ValueError(f"{folder} is not a result folder: it has no opts.json "
                             "(pass folders written by a training run of main.py --result_path)")
        if folder.resolve() in seen:
            raise ValueError(f"{folder} is given twice (also as {seen[folder.resolve()]})")
        seen[folder.resolve()] = folder
    return folders


def _common_parent(folders: Sequence[Path]) -> Path:
    return Path(os.path.commonpath([str(f.resolve()) for f in folders]))


def _run_names(folders: Sequence[Path]) -> list[str]:
    common = _common_parent(folders)
    names = [str(f.resolve().relative_to(common)) for f in folders]
    return names if all(n != "." for n in names) else [f.resolve().name for f in folders]


class _GroundTruths:
    """Ground truths ({video_id: label name}) of the subset, each annotation file read once."""

    def __init__(self, subset: str) -> None:
        self.subset, self.loaded = subset, {}

    def __call__(self, path: Path) -> dict[str, str]:
        if path not in self.loaded:
            self.loaded[path] = load_ground_truth(path, self.subset)[0]
        return self.loaded[path]


def _top1(folder: Path, opts: dict, annotation_path: Path | None,
          ground_truths: _GroundTruths) -> float | None:
    """Video top-1 in percent of `folder/val.json`, None without one."""
    val_json = folder / "val.json"
    if not val_json.is_file():
        return None
    if annotation_path is None:
        if not opts.get("annotation_path"):
            raise ValueError(f"{folder}/opts.json records no annotation_path: pass --annotation_path")
        annotation_path = Path(opts["annotation_path"])
    try:
        ground_truth = ground_truths(annotation_path)
        predictions = load_predictions(val_json)
        # ignore=True: the single-run report's and eval_accuracy.py --ignore's count.
        return 100 * top_k_accuracy(ground_truth, predictions, 1, ignore=True).accuracy
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"{val_json}: {e} (the annotation comes from opts.json's annotation_path "
                         "unless --annotation_path is given)") from None


def _retrieval(folder: Path) -> dict[str, float | None]:
    """R@k and mAP in percent of `folder/retrieval.json`; None for each one it lacks."""
    path = folder / "retrieval.json"
    if not path.is_file():
        return dict.fromkeys(RETRIEVAL_METRICS)
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    return {name: float(stored[name]) if isinstance(stored.get(name), (int, float)) else None
            for name in RETRIEVAL_METRICS}


def read_runs(paths: Sequence[Path | str], annotation_path: Path | str | None = None,
              subset: str = "validation") -> list[Run]:
    """Every folder's configuration, options and metrics (see `Run`).

    annotation_path: the ground truth for top-1 of every run; by default each run's opts.json's.
    subset: the annotation subset that val.json holds predictions for.
    Every folder is checked (`check_result_folders`) before any metric is read.
    """
    folders = check_result_folders(paths)
    names = _run_names(folders)
    ground_truths = _GroundTruths(subset)
    runs = []
    for folder, name in zip(folders, names):
        opts = _read_options(folder / "opts.json")
        top1 = _top1(folder, opts, None if annotation_path is None else Path(annotation_path), ground_truths)
        runs.append(Run(path=folder, name=name, configuration=configuration(opts, folder / "opts.json"),
                        options=_run_options(folder, opts),
                        metrics={"top-1": top1, **_retrieval(folder)}))
    return runs


def _key(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def option_value(run: Run, name: str) -> object:
    """`run`'s value of the option `name` (a key of `Run.options`), ABSENT where it records
    none. A run without eval_opts.json was evaluated by its training run, with its training
    options: its `eval_opts.json: --x` is its `--x`, so that comparing it with a script's
    evaluation-only run shows only the evaluation options that differ."""
    if name.startswith(EVAL_OPTIONS) and not any(key.startswith(EVAL_OPTIONS) for key in run.options):
        name = name[len(EVAL_OPTIONS):]
    return run.options.get(name, ABSENT)


def _evaluation_changes(runs: Sequence[Run], name: str) -> bool:
    """Whether some run's evaluation-only run set `name` (`eval_opts.json: --x`) to other than
    its training's `--x`; where none did, the `--x` column already shows every value."""
    return any(option_value(run, name) != run.options.get(name[len(EVAL_OPTIONS):], ABSENT) for run in runs)


def differing_options(runs: Sequence[Run]) -> list[str]:
    """Option names (as in `Run.options`) whose value (`option_value`) is not the same in
    every run, in the order they first appear in; an option a run does not record differs
    from any value. An evaluation option counts only where an evaluation-only run changed it
    (`_evaluation_changes`)."""
    names = list(dict.fromkeys(name for run in runs for name in run.options))
    return [name for name in names if len({_key(option_value(run, name)) for run in runs}) > 1
            and (not name.startswith(EVAL_OPTIONS) or _evaluation_changes(runs, name))]


def _format(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _cell(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def group_by_configuration(runs: Sequence[Run], differing: Sequence[str]) -> list[tuple[str, list[Run]]]:
    """Runs whose options differ only in --manual_seed, as (label, runs) in first-seen order.

    The label is the configuration's name, followed by the options that tell apart groups of
    the same configuration where there are several.
    """
    settings = [name for name in differing if name != SEED_OPTION]
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(_key(option_value(run, n)) for n in settings), []).append(run)
    labelled = []
    for members in groups.values():
        same_configuration = [g for g in groups.values() if g[0].configuration == members[0].configuration]
        label = members[0].configuration
        if len(same_configuration) > 1:
            distinct = [n for n in settings
                        if len({_key(option_value(g[0], n)) for g in same_configuration}) > 1]
            label += " (" + ", ".join(f"{n} {_format(option_value(members[0], n))}"
                                      for n in distinct) + ")"
        labelled.append((label, members))
    return labelled


def _mean_cell(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return MISSING
    text = f"{statistics.mean(present):.2f}"
    if len(present) > 1:
        text += f" ± {statistics.stdev(present):.2f}"
    if len(present) < len(values):
        text += f" ({len(present)} of {len(values)} runs)"
    return text


def comparison_lines(runs: Sequence[Run]) -> list[str]:
    """The markdown of the comparison report (without writing its figure)."""
    differing = differing_options(runs)
    lines = [f"# Comparison of {len(runs)} runs", "",
             "Percent. Video top-1 from each folder's `val.json` and the annotation's validation labels "
             "(as `util_scripts/eval_accuracy.py GT val.json --subset validation -k 1 --ignore`); "
             "R@k and mAP from `retrieval.json` (validation queries, training gallery, SPEC §5). "
             f"`{MISSING}`: the folder has no `val.json` (top-1) or `retrieval.json` (R@k, mAP).", ""]
    lines += table(["run", "configuration", *METRICS],
                   [[f"`{run.name}`", run.configuration, *(_cell(run.metrics[m]) for m in METRICS)]
                    for run in runs])
    groups = group_by_configuration(runs, differing)
    if any(len(members) > 1 for _, members in groups):
        lines += ["## Mean ± std over seeds", "",
                  "Runs whose options differ only in `--manual_seed`; sample standard deviation.", ""]
        lines += table(["configuration", "runs", *METRICS],
                       [[label, len(members), *(_mean_cell([r.metrics[m] for r in members]) for m in METRICS)]
                        for label, members in groups])
    lines += [f"![top-1, R@k and mAP per run]({FIGURE})", "", "## Options that differ", "",
              "From each folder's `opts.json` (and `eval_opts.json`, the options of an evaluation-only "
              f"run, where there is one; a folder without one was evaluated with its `opts.json`). Paths inside a run's own folder read `{RUN_FOLDER}/...`. "
              "Not compared, since they cannot change the numbers: "
              + ", ".join(f"`--{name}`" for name in IGNORED_OPTIONS) + ".", ""]
    if differing:
        lines += table(["run", *(f"`{name}`" for name in differing)],
                       [[f"`{run.name}`", *(_format(option_value(run, name)) for name in differing)]
                        for run in runs])
    else:
        lines += ["None: every compared option is the same in every run.", ""]
    return lines


def _output_folder(runs: Sequence[Run], out_dir: Path | str | None) -> Path:
    if out_dir is None:
        out = _common_parent([run.path for run in runs])
        if any(run.path.resolve() == out for run in runs):
            raise ValueError(f"the runs' common folder {out} is a run itself: pass --out")
    else:
        out = Path(out_dir)
    if (out / "opts.json").is_file():
        raise ValueError(f"{out} is a result folder, whose report.md describes that run: pass another --out")
    return out


def write_comparison(paths: Sequence[Path | str], out_dir: Path | str | None = None,
                     annotation_path: Path | str | None = None, subset: str = "validation") -> Path:
    """Write `report.md` and `comparison.png` comparing the result folders `paths` into
    `out_dir` (default: their common parent folder); returns the report's path.

    annotation_path, subset: as `read_runs`. Raises ValueError (one line, naming the folder or
    file) for a folder that is not a result folder, before anything is written.
    """
    runs = read_runs(paths, annotation_path, subset)
    out = _output_folder(runs, out_dir)
    lines = comparison_lines(runs)
    out.mkdir(parents=True, exist_ok=True)
    plots.plot_comparison([f"{run.name} ({run.configuration})" for run in runs],
                          [run.configuration for run in runs],
                          {m: [run.metrics[m] for run in runs] for m in METRICS}, out / FIGURE)
    report = out / "report.md"
    write_atomically(report, "\n".join(lines).encode())
    return report
