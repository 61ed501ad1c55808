"""Model → numbers (DESIGN.md): video-level inference, accuracy, retrieval, the report.

- `video_predictions`: per-video softmax scores and features from window outputs,
  `val.json` and `features_<subset>.npz`.
- `accuracy`: top-k video accuracy of a `val.json` against the annotation JSON.
- `retrieval`: R@k and mAP of SPEC §5.
- `plots`, `report`: figures and `report.md` of a result directory.
"""
