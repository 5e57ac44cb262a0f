"""Relational knowledge distillation (Park et al., CVPR 2019): the student keeps the
teacher's distances between pairs of samples and angles within triplets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lepton_exp.distill.base import DistillTerm, TermInputs
from lepton_exp.distill.layers import check_vectors

SQUARED_DISTANCE_FLOOR = 1e-12  # the reference's: keeps sqrt's gradient finite at 0


def pairwise_distances(embedding: torch.Tensor) -> torch.Tensor:
    """N x N Euclidean distances, from |a|² + |b|² - 2 a·b floored at 1e-12 (as the reference),
    with the diagonal set to exactly 0."""
    squared_norms = embedding.pow(2).sum(dim=1)
    squared = squared_norms[:, None] + squared_norms[None, :] - 2 * embedding @ embedding.t()
    distances = squared.clamp(min=SQUARED_DISTANCE_FLOOR).sqrt()
    return distances * (1 - torch.eye(len(embedding), device=embedding.device,
                                      dtype=distances.dtype))


def normalised_distances(embedding: torch.Tensor) -> torch.Tensor:
    """Distances divided by their mean over the non-zero (off-diagonal) pairs."""
    distances = pairwise_distances(embedding)
    positive = distances > 0
    # one sample has no pair: its single zero distance stays 0 instead of 0/0
    mean = distances[positive].sum() / positive.sum().clamp(min=1)
    return distances / mean.clamp(min=torch.finfo(distances.dtype).tiny)


def triplet_angles(embedding: torch.Tensor) -> torch.Tensor:
    """Cosines of the angle at sample i between samples j and k, for all (i, j, k): N³."""
    differences = F.normalize(embedding[None, :, :] - embedding[:, None, :], dim=2)
    return (differences @ differences.transpose(1, 2)).flatten()


def rkd_loss(student_embedding: torch.Tensor, teacher_embedding: torch.Tensor,
             distance_weight: float = 25.0, angle_weight: float = 50.0) -> torch.Tensor:
    """distance_weight * smooth-L1 of the normalised distance matrices + angle_weight *
    smooth-L1 of the triplet angles (each a mean over entries); the teacher side without
    gradient. Per-sample tensors are flattened first; the two sizes may differ."""
    student = student_embedding.flatten(1)
    with torch.no_grad():
        teacher = teacher_embedding.flatten(1)
        teacher_distances = normalised_distances(teacher)
        teacher_angles = triplet_angles(teacher)
    distance = F.smooth_l1_loss(normalised_distances(student), teacher_distances)
    angle = F.smooth_l1_loss(triplet_angles(student), teacher_angles)
    return distance_weight * distance + angle_weight * angle


class Term(DistillTerm):
    needs = "embedding"

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0):
        super().__init__()
        self.distance_weight = distance_weight
        self.angle_weight = angle_weight

    def bind(self, student, teacher, pairs):
        super().bind(student, teacher, pairs)
        check_vectors("rkd", student.embedding, teacher.embedding)

    def forward(self, student, teachers, inputs: TermInputs):
        return rkd_loss(student.embedding, teachers[0].embedding, self.distance_weight,
                        self.angle_weight)
