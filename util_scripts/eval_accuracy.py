"""Top-k video accuracy of a val.json (SPEC §4), the original 3D-ResNets-PyTorch tool.

    python util_scripts/eval_accuracy.py GT.json val.json --subset validation -k 1 --ignore

GT.json is the annotation JSON; val.json the inference output. Prints the accuracy as a
fraction; `--save` also writes it to `<val.json stem>_top<k>.txt` beside val.json.
Predictions of ids that are not videos of the subset in GT.json are an error naming them
(`--allow_unknown_ids`: a warning with their count, and they are left out); no ground-truth
video with a prediction is an error, never an accuracy of 0.
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file: make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from errors import ArgumentParser, exit_with_error
from evaluation.accuracy import (AccuracyResult, describe_ids, load_ground_truth, load_predictions,
                                 subset_ids, top_k_accuracy, unknown_ids)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ground_truth_path", type=Path, help="annotation JSON")
    parser.add_argument("result_path", type=Path, help="val.json written by inference")
    parser.add_argument("-k", type=int, default=1, help="top-k")
    parser.add_argument("--subset", type=str, default="validation")
    parser.add_argument("--save", action="store_true",
                        help="write the accuracy to <val.json stem>_top<k>.txt")
    parser.add_argument("--ignore", action="store_true",
                        help="ignore ground-truth videos missing from val.json "
                             "(otherwise they count as wrong)")
    parser.add_argument("--allow_unknown_ids", action="store_true",
                        help="leave out, with a warning, predictions of ids that are not videos of "
                             "the subset in GT.json (otherwise an error naming them)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> AccuracyResult:
    args = parse_args(argv)
    try:
        ground_truth, _ = load_ground_truth(args.ground_truth_path, args.subset)
        predictions = load_predictions(args.result_path)
        unknown = unknown_ids(predictions, subset_ids(args.ground_truth_path, args.subset))
        if unknown and not args.allow_unknown_ids:
            raise ValueError(f"{args.result_path}: {len(unknown)} of {len(predictions)} predicted ids are not "
                             f"videos of subset '{args.subset}' in {args.ground_truth_path}: "
                             f"{describe_ids(unknown)}; check that the two files belong together and "
                             f"--subset, or pass --allow_unknown_ids to leave them out")
        if unknown:
            # Before the accuracy, which may fail for want of any known id.
            print(f"warning: {len(unknown)} of {len(predictions)} predicted ids are not videos of subset "
                  f"'{args.subset}' and are left out (--allow_unknown_ids; first: {describe_ids(unknown, 3)})",
                  file=sys.stderr)
        result = top_k_accuracy(ground_truth, predictions, args.k, args.ignore)
    except (FileNotFoundError, ValueError) as e:
        exit_with_error(str(e))
    print(f"number of ground truth: {len(ground_truth)}")
    print(f"number of result: {len(predictions)}")
    print(f"videos counted: {result.n_ground_truth}")
    print(f"top-{args.k} accuracy: {result.accuracy}")
    if args.save:
        out = args.result_path.parent / f"{args.result_path.stem}_top{args.k}.txt"
        out.write_text(f"{result.accuracy}\n")
    return result


if __name__ == "__main__":
    main()
