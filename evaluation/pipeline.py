"""Evaluation of a trained student: video predictions (val.json, top-1), video features,
retrieval (SPEC §5) and the report, each computed once per subset."""
import json
import logging
from pathlib import Path

import torch
from torch import nn

from datasets import TRAINING, VALIDATION, build_loader, load_annotation
from datasets.config import DataConfig, make_dataset
from evaluation.accuracy import load_ground_truth, load_predictions, top_k_accuracy
from evaluation.config import EvalConfig
from evaluation.report import write_report
from evaluation.retrieval import retrieval_metrics
from evaluation.video_predictions import VideoPredictions, predict_videos, save_features, write_val_json
from training.batch import model_input
from training.distributed import is_distributed, is_main_process
from training.files import write_atomically
from training.precision import SpeedMode

log = logging.getLogger("ccl")


# Windows per inference batch on CPU: the original's peak memory (it batched one video,
# about 10 windows of a UCF clip); larger batches are no faster on CPU.
CPU_INFERENCE_BATCH = 8


def inference_batch_size(config: EvalConfig, device: torch.device) -> int:
    """Windows per inference batch and process: `config.batch_size` (--inference_batch_size),
    or when 0, by device: 4 × --batch_size on CUDA (larger kernels keep the GPU busy; 64
    windows of 16 × 112² take about 3 GB there), CPU_INFERENCE_BATCH on CPU."""
    if config.batch_size:
        return config.batch_size
    return 4 * config.training_batch_size if device.type == "cuda" else CPU_INFERENCE_BATCH


def predict_subset(config: EvalConfig, data: DataConfig, student: nn.Module, subset: str,
                   device: torch.device, mode: SpeedMode):
    """Non-overlapping windows of every video of `subset` → per-video scores and features,
    the student run in `mode`. Windows are dataset items, so memory is per batch whatever
    the videos' length."""
    dataset = make_dataset(data, subset, "inference")
    loader = build_loader(dataset, inference_batch_size(config, device), shuffle=False,
                          n_threads=data.n_threads, distributed=is_distributed())
    predictions = predict_videos(student, loader, dataset.n_videos, device,
                                 lambda clip: model_input(clip, data.mean, data.std, mode.channels_last),
                                 mode.autocast_dtype)
    if is_main_process():
        save_features(config.result_path / f"features_{subset}.npz", dataset.video_ids,
                      dataset.video_labels, predictions.features)
    return dataset, predictions


def evaluate(config: EvalConfig, data: DataConfig, student: nn.Module, device: torch.device,
             mode: SpeedMode) -> dict:
    """inference: `<subset>.json` (val.json for the validation subset) and top-1;
    retrieval: validation queries against the training gallery → retrieval.json;
    report: report.md with figures, its classification section val.json's against the
    validation labels. Returns the numbers."""
    results: dict = {}
    cache: dict[str, tuple] = {}

    def subset_outputs(subset: str) -> tuple:
        if subset not in cache:
            cache[subset] = predict_subset(config, data, student, subset, device, mode)
        return cache[subset]

    if config.inference:
        dataset, predictions = subset_outputs(config.subset)
        path = config.result_path / config.predictions_file
        if is_main_process():
            write_val_json(path, dataset.video_ids, predictions.scores, dataset.labels, config.output_topk)
        results["top1"] = top1(data.annotation_path, path, config.subset) if is_main_process() else None
        if results["top1"] is not None:
            log.info("video top-1 on %s: %.2f%%", config.subset, 100 * results["top1"])
    if config.retrieval:
        query_set, query = subset_outputs(VALIDATION)
        gallery_set, gallery = subset_outputs(TRAINING)
        results["retrieval"] = retrieve(query_set, query, gallery_set, gallery, config.result_path, device)
    if config.report and is_main_process():
        # The report's classification section reads val.json: the validation subset's
        # predictions, whichever subset this run inferred.
        class_names = load_annotation(data.annotation_path).labels
        ground_truth = labelled_ground_truth(data.annotation_path, VALIDATION)
        results["report"] = str(write_report(config.result_path, class_names, ground_truth))
        log.info("report: %s", results["report"])
    return results


def labelled_ground_truth(annotation_path: Path, subset: str) -> dict[str, str] | None:
    """{video_id: label name} of `subset`, None for an unlabeled subset (ActivityNet test)."""
    try:
        return load_ground_truth(annotation_path, subset)[0]
    except ValueError:
        return None


def top1(annotation_path: Path, predictions_path: Path, subset: str) -> float | None:
    """Video top-1 as `util_scripts/eval_accuracy.py GT val.json --subset S -k 1 --ignore`;
    None for an unlabeled subset."""
    ground_truth = labelled_ground_truth(annotation_path, subset)
    if ground_truth is None:
        return None
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
        write_atomically(result_path / "retrieval.json", (json.dumps(metrics, indent=2) + "\n").encode())
        log.info("retrieval: %s", " ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in metrics.items()))
    return metrics
