"""Compositional embedding head of SPEC §2 (one per teacher)."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

FEATURE_DIM = 512


class CompositionClassifier(nn.Module):
    """m = t + W·[t/‖t‖ ; v/‖v‖] + b, z_m = fc(m) (SPEC §2; the original's names `mlp`, `fc`).

    input_dim: size of [t ; v] (1024 for 512-d teacher and student features).
    forward: teacher t (B, 512), student v (B, 512) →
        (logits z_m (B, n_classes), composed feature m (B, 512)), in the input dtype.
    """

    def __init__(self, input_dim: int, n_classes: int):
        super().__init__()
        self.mlp = nn.Linear(input_dim, FEATURE_DIM)
        self.fc = nn.Linear(FEATURE_DIM, n_classes)

    def forward(self, teacher: Tensor, student: Tensor) -> tuple[Tensor, Tensor]:
        joint = torch.cat([F.normalize(teacher, dim=1), F.normalize(student, dim=1)], dim=1)
        composed = teacher + self.mlp(joint)
        return self.fc(composed), composed
