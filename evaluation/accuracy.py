"""Video-level top-k accuracy of a `val.json` (SPEC §4), as the original
`util_scripts/eval_accuracy.py` of 3D-ResNets-PyTorch computes it.
"""
import json
from dataclasses import dataclass
from pathlib import Path

from datasets.annotation import load_annotation
from errors import require_file


def _read_json(path: Path, what: str) -> dict:
    require_file(path, "", "a val.json written by inference", fix=f" ({what})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({what}): {e}") from None


def load_ground_truth(annotation_path: Path | str,
                      subset: str = "validation") -> tuple[dict[str, str], list[str]]:
    """Labels of the videos of `subset` in an annotation JSON (SPEC §1, DESIGN.md).

    Returns ({video_id: label name}, class names in label-index order). Videos without
    a label (`"annotations": {}`) are left out: they have nothing to be scored against.
    """
    annotation = load_annotation(annotation_path)
    ground_truth = {video_id: entry["annotations"]["label"]
                    for video_id, entry in annotation.database.items()
                    if entry.get("subset") == subset and entry.get("annotations", {}).get("label")}
    if not ground_truth:
        raise ValueError(f"{annotation_path} has no labelled video of subset '{subset}' "
                         "(check --subset)")
    return ground_truth, list(annotation.labels)


def subset_ids(annotation_path: Path | str, subset: str) -> set[str]:
    """Every video id of `subset` in an annotation JSON, labelled or not."""
    database = load_annotation(annotation_path).database
    return {video_id for video_id, entry in database.items() if entry.get("subset") == subset}


def unknown_ids(predictions: dict[str, list[str]], known: set[str]) -> list[str]:
    """Predicted ids that are not among `known` (the subset's videos), sorted."""
    return sorted(set(predictions) - known)


def describe_ids(ids: list[str], limit: int = 5) -> str:
    """`a, b, c` or `a, b, c, d, e and 7 more`."""
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def load_predictions(val_json_path: Path | str) -> dict[str, list[str]]:
    """Predicted labels per video of a `val.json`, highest score first.

    A video's list may hold any number of entries in any order; they are sorted here
    (equal scores keep file order).
    """
    val_json_path = Path(val_json_path)
    data = _read_json(val_json_path, "predictions written by inference")
    if "results" not in data:
        raise ValueError(f"{val_json_path} lacks 'results'; expected a val.json (SPEC §1)")
    try:
        return {video_id: [entry["label"] for entry in
                           sorted(entries, key=lambda entry: entry["score"], reverse=True)]
                for video_id, entries in data["results"].items()}
    except (KeyError, TypeError):
        raise ValueError(f"{val_json_path}: every result must be a list of "
                         '{"label": name, "score": p} (SPEC §1)') from None


@dataclass
class AccuracyResult:
    """n_ground_truth: videos counted; n_correct: those whose label is in the top k."""
    n_ground_truth: int
    n_correct: int

    @property
    def accuracy(self) -> float:
        """Fraction in [0, 1], as the original prints it."""
        return self.n_correct / self.n_ground_truth


def top_k_accuracy(ground_truth: dict[str, str], predictions: dict[str, list[str]], k: int,
                   ignore: bool) -> AccuracyResult:
    """Share of ground-truth videos whose label is among their first k predicted labels.

    predictions: labels per video, highest score first (`load_predictions`).
    ignore: leave ground-truth videos missing from `predictions` out of the count;
        otherwise they count as wrong (the original's `--ignore`).
    Predictions of ids outside `ground_truth` are not counted (`unknown_ids` finds them).
    No ground-truth video with a prediction is a ValueError, never an accuracy of 0.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    present = [video_id for video_id in ground_truth if video_id in predictions]
    if not present:
        raise ValueError("no ground-truth video has a prediction: are the annotation file "
                         "and val.json of the same dataset and subset?")
    n_correct = sum(ground_truth[video_id] in predictions[video_id][:k] for video_id in present)
    return AccuracyResult(n_ground_truth=len(present) if ignore else len(ground_truth),
                          n_correct=n_correct)
