"""Evaluation of a trained student: video predictions (val.json, top-1), video features,
retrieval (SPEC §5) and the report, each computed once per subset."""
import json
import logging
from pathlib import Path

import torch
from torch import nn

from datasets import build_loader
from evaluation.accuracy import load_ground_truth, load_predictions, top_k_accuracy
from evaluation.report import write_report
from evaluation.retrieval import retrieval_metrics
from evaluation.video_predictions import VideoPredictions, predict_videos, save_features, write_val_json
from opts import SUBSETS
from training.batch import model_input
from training.data import make_dataset
from training.distributed import is_distributed, is_main_process

log = logging.getLogger("ccl")


# Windows per inference batch on CPU: the original's peak memory (it batched one video,
# about 10 windows of a UCF clip); larger batches are no faster on CPU.
CPU_INFERENCE_BATCH = 8


def inference_batch_size(opt, device: torch.device) -> int:
    """Windows per inference batch and process: --inference_batch_size, or when 0, by
    device: 4 × --batch_size on CUDA (larger kernels keep the GPU busy; 64 windows of
    16 × 112² take about 3 GB there), CPU_INFERENCE_BATCH on CPU."""
    if opt.inference_batch_size:
        return opt.inference_batch_size
    return 4 * opt.batch_size if device.type == "cuda" else CPU_INFERENCE_BATCH


def predict_subset(opt, student: nn.Module, subset: str, settings, device: torch.device):
    """Non-overlapping windows of every video of `subset` → per-video scores and features.
    Windows are dataset items, so memory is per batch whatever the videos' length."""
    dataset = make_dataset(opt, subset, "inference")
    batch = inference_batch_size(opt, device)
    loader = build_loader(dataset, batch, shuffle=False, n_threads=opt.n_threads, distributed=is_distributed())
    predictions = predict_videos(student, loader, dataset.n_videos, device,
                                 lambda clip: model_input(clip, settings.mean, settings.std, settings.channels_last),
                                 settings.autocast_dtype)
    if is_main_process():
        save_features(Path(opt.result_path) / f"features_{subset}.npz", dataset.video_ids,
                      dataset.video_labels, predictions.features)
    return dataset, predictions


def evaluate(opt, student: nn.Module, settings, device: torch.device) -> dict:
    """--inference: `<subset>.json` (val.json for the validation subset) and top-1;
    --retrieval: validation queries against the training gallery → retrieval.json;
    --report: report.md with figures. Returns the numbers."""
    result_path = Path(opt.result_path)
    results: dict = {}
    cache: dict[str, tuple] = {}

    def subset_outputs(subset: str) -> tuple:
        if subset not in cache:
            cache[subset] = predict_subset(opt, student, subset, settings, device)
        return cache[subset]

    inference_subset = SUBSETS[opt.inference_subset]
    if opt.inference:
        dataset, predictions = subset_outputs(inference_subset)
        path = result_path / f"{opt.inference_subset}.json"
        if is_main_process():
            write_val_json(path, dataset.video_ids, predictions.scores, dataset.labels, opt.output_topk)
        results["top1"] = top1(opt.annotation_path, path, inference_subset) if is_main_process() else None
        if results["top1"] is not None:
            log.info("video top-1 on %s: %.2f%%", inference_subset, 100 * results["top1"])
    if opt.retrieval:
        query_set, query = subset_outputs(SUBSETS["val"])
        gallery_set, gallery = subset_outputs(SUBSETS["train"])
        results["retrieval"] = retrieve(query_set, query, gallery_set, gallery, result_path, device)
    if opt.report and is_main_process():
        ground_truth, class_names = load_ground_truth(opt.annotation_path, inference_subset)
        results["report"] = str(write_report(result_path, class_names, ground_truth))
        log.info("report: %s", results["report"])
    return results


def top1(annotation_path: Path, predictions_path: Path, subset: str) -> float | None:
    """Video top-1 as `util_scripts/eval_accuracy.py GT val.json --subset S -k 1 --ignore`."""
    try:
        ground_truth, _ = load_ground_truth(annotation_path, subset)
    except ValueError:
        return None   # an unlabeled subset (ActivityNet test)
    return top_k_accuracy(ground_truth, load_predictions(predictions_path), 1, ignore=True).accuracy


def retrieve(query_set, query: VideoPredictions, gallery_set, gallery: VideoPredictions,
             result_path: Path, device: torch.device | str = "cpu") -> dict:
    """R@1/5/10/20 and mAP of labelled queries against the labelled gallery (SPEC §5),
    ranked on `device` (the run's: CUDA when it trains there)."""
    q_labels = torch.tensor(query_set.video_labels)
    g_labels = torch.tensor(gallery_set.video_labels)
    q_keep, g_keep = q_labels >= 0, g_labels >= 0
    metrics = retrieval_metrics(query.features[q_keep], q_labels[q_keep],
                                gallery.features[g_keep], g_labels[g_keep], device=device)
    if is_main_process():
        (result_path / "retrieval.json").write_text(json.dumps(metrics, indent=2) + "\n")
        log.info("retrieval: %s", " ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in metrics.items()))
    return metrics
