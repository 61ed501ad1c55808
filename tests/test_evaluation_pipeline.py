"""Inference batches: their default by device, and a long video cut into bounded batches."""
import json
from pathlib import Path

import torch
from torch import nn

from datasets.config import DataConfig
from datasets.synthetic import write_synthetic_dataset
from evaluation.config import EvalConfig
from evaluation.pipeline import CPU_INFERENCE_BATCH, evaluate, inference_batch_size, predict_subset
from training.precision import SpeedMode


def eval_config(result_path: Path, batch_size: int = 0, training_batch_size: int = 16) -> EvalConfig:
    return EvalConfig(result_path=result_path, inference=True, subset="validation", predictions_file="val.json",
                      output_topk=5, retrieval=False, report=False, batch_size=batch_size,
                      training_batch_size=training_batch_size)


def test_default_inference_batch_is_chosen_by_device(tmp_path):
    default, given = eval_config(tmp_path, training_batch_size=12), eval_config(tmp_path, batch_size=5)
    assert inference_batch_size(default, torch.device("cpu")) == CPU_INFERENCE_BATCH == 8
    assert inference_batch_size(default, torch.device("cuda")) == 48
    assert inference_batch_size(given, torch.device("cpu")) == 5
    assert inference_batch_size(given, torch.device("cuda")) == 5


class WindowRecorder(nn.Module):
    """A stand-in student: logits 0, feature = the mean of each clip's first channel; it
    keeps the batch sizes it is given."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.batch_sizes: list[int] = []

    def forward(self, clip):
        self.batch_sizes.append(len(clip))
        return clip.new_zeros(len(clip), self.n_classes), clip[:, :1].mean(dim=(2, 3, 4))


def test_a_long_video_is_inferred_a_default_batch_at_a_time(tmp_path):
    # One video of 400 frames at 4-frame windows: 100 windows, each an item.
    data = write_synthetic_dataset(tmp_path / "data", n_videos=1, n_frames=400, n_classes=1)
    annotation = json.loads(data.annotation_path.read_text())
    for entry in annotation["database"].values():
        entry["subset"] = "validation"
    data.annotation_path.write_text(json.dumps(annotation))
    config = DataConfig(video_path=data.video_path, annotation_path=data.annotation_path, audio_path=None,
                        audio_cache_fallback=tmp_path / ".ccl_cache", sample_size=16, sample_duration=4,
                        t_stride=1, crop_scale=(0.25, 1.0), crop_ratio=(0.75, 4 / 3), hflip=True, n_val_clips=3,
                        inference_stride=4, strict=False, reduced_decode=False, gpu_decode=False,
                        mean=(0.0,) * 3, std=(1.0,) * 3, batch_size=16, n_threads=0)
    student = WindowRecorder(1)
    dataset, predictions = predict_subset(eval_config(tmp_path), config, student, "validation",
                                          torch.device("cpu"), SpeedMode(None, False))
    assert len(dataset) == 100 and predictions.counts.tolist() == [100]
    assert student.batch_sizes == [8] * 12 + [4]
    # The video's feature is the mean over its windows, each loaded on its own (pixels
    # scaled to [0, 1], mean 0 and std 1 here).
    windows = torch.stack([dataset[i]["clip"][:1].float().mean() / 255 for i in range(100)])
    assert torch.allclose(predictions.features[0, 0], windows.double().mean().float(), atol=1e-4)


def test_the_report_after_inference_on_an_unlabeled_subset_reads_the_validation_labels(tmp_path):
    """ActivityNet's test subset has no labels: inference on it writes test.json and top-1 is
    None; the report still comes, and its classification section is val.json's, scored
    against the validation labels."""
    data = write_synthetic_dataset(tmp_path / "data", n_videos=8, n_frames=8, n_classes=2)
    annotation = json.loads(data.annotation_path.read_text())
    for video_id, entry in list(annotation["database"].items())[:2]:   # training videos
        label = entry["annotations"].pop("label")
        entry.update(subset="testing", video=f"{label}/{video_id}")
    data.annotation_path.write_text(json.dumps(annotation))
    n_validation = sum(entry["subset"] == "validation" for entry in annotation["database"].values())
    config = DataConfig(video_path=data.video_path, annotation_path=data.annotation_path, audio_path=None,
                        audio_cache_fallback=tmp_path / ".ccl_cache", sample_size=16, sample_duration=4,
                        t_stride=1, crop_scale=(0.25, 1.0), crop_ratio=(0.75, 4 / 3), hflip=True, n_val_clips=3,
                        inference_stride=4, strict=False, reduced_decode=False, gpu_decode=False,
                        mean=(0.0,) * 3, std=(1.0,) * 3, batch_size=4, n_threads=0)
    mode = SpeedMode(None, False)
    evaluate(eval_config(tmp_path), config, WindowRecorder(2), torch.device("cpu"), mode)   # val.json
    testing = EvalConfig(result_path=tmp_path, inference=True, subset="testing", predictions_file="test.json",
                         output_topk=2, retrieval=False, report=True, batch_size=0, training_batch_size=4)
    results = evaluate(testing, config, WindowRecorder(2), torch.device("cpu"), mode)
    assert results["top1"] is None
    assert len(json.loads((tmp_path / "test.json").read_text())["results"]) == 2
    assert f"| videos scored | {n_validation} of {n_validation} |" in Path(results["report"]).read_text()
