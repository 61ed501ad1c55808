"""Compositional embedding head of SPEC §2 (one per teacher), for teacher features of any D."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

STUDENT_DIM = 512


class CompositionClassifier(nn.Module):
    """m = t + W·[t/‖t‖ ; v/‖v‖] + b, z_m = fc(m) (SPEC §2; the original's names `mlp`, `fc`).

    input_dim: size of [t ; v], D + 512 for D-d teacher features t and 512-d student
    features v (1024 in the paper, D = 512). W: (D, D + 512), fc: D → n_classes.
    forward: teacher t (B, D), student v (B, 512) →
        (logits z_m (B, n_classes), composed feature m (B, D)), in the input dtype.

    With D ≠ 512 (an extension of the paper) the contrastive terms C(v, m) and C(v, t)
    compare the student's feature in the teacher's space, `project_student(v)` = P·v with
    a learned P (D, 512) without bias, parameter `projection.weight`; with D = 512 there is
    no P (the paper's parameters only) and `project_student` is the identity.
    """

    def __init__(self, input_dim: int, n_classes: int):
        super().__init__()
        teacher_dim = input_dim - STUDENT_DIM
        if teacher_dim < 1:
            raise ValueError(f"input_dim {input_dim} must be D + {STUDENT_DIM} with a teacher dimension D ≥ 1")
        self.mlp = nn.Linear(input_dim, teacher_dim)
        self.fc = nn.Linear(teacher_dim, n_classes)
        self.projection = (nn.Linear(STUDENT_DIM, teacher_dim, bias=False)
                           if teacher_dim != STUDENT_DIM else None)

    def forward(self, teacher: Tensor, student: Tensor) -> tuple[Tensor, Tensor]:
        joint = torch.cat([F.normalize(teacher, dim=1), F.normalize(student, dim=1)], dim=1)
        composed = teacher + self.mlp(joint)
        return self.fc(composed), composed

    def project_student(self, student: Tensor) -> Tensor:
        """v (B, 512) → the student feature compared with t and m: P·v (B, D), or v itself
        when D = 512."""
        return student if self.projection is None else self.projection(student)


def composition_head(teacher_dim: int, n_classes: int) -> CompositionClassifier:
    """The head of a teacher with `teacher_dim`-d features (input [t ; v] of D + 512)."""
    return CompositionClassifier(teacher_dim + STUDENT_DIM, n_classes)
