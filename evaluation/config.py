"""What is evaluated after training, resolved once from the options (`opts.resolve`)."""
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EvalConfig:
    """inference: video predictions of the annotation subset `subset` into
    `<result_path>/<predictions_file>` (val.json for the validation subset), `output_topk`
    classes each; retrieval: validation queries against the training gallery; report:
    report.md with figures. batch_size: clips per inference batch and process, 0 for the
    device's default (`evaluation.pipeline.inference_batch_size`, which scales
    `training_batch_size`)."""
    result_path: Path
    inference: bool
    subset: str
    predictions_file: str
    output_topk: int
    retrieval: bool
    report: bool
    batch_size: int
    training_batch_size: int

    @property
    def wanted(self) -> bool:
        """Whether anything is evaluated at all."""
        return self.inference or self.retrieval or self.report
