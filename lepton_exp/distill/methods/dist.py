"""DIST (Huang et al., NeurIPS 2022, "Knowledge Distillation from A Stronger Teacher"):
instead of KL's exact match, keep the teacher's relations between class probabilities, by
Pearson correlation, within each sample (inter-class) and across the batch per class
(intra-class)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from lepton_exp.distill.base import DistillTerm, TermInputs
from lepton_exp.distill.methods.kd import soft_targets

EPS = 1e-8  # torchdistill's, in the cosine similarity of the centred rows


def pearson_correlation(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Per row: the Pearson correlation of two matrices' rows (cosine of the centred rows)."""
    return F.cosine_similarity(first - first.mean(dim=1, keepdim=True),
                               second - second.mean(dim=1, keepdim=True), dim=1, eps=EPS)


def dist_loss(student_logits: torch.Tensor,
              teacher_logits: torch.Tensor | Sequence[torch.Tensor], beta: float = 1.0,
              gamma: float = 1.0, temperature: float = 1.0,
              teacher_weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """T² * (beta * inter + gamma * intra) on softmax(logits / T): inter = 1 - the mean over
    samples of the Pearson correlation of their class distributions, intra = 1 - the mean
    over classes of the correlation of that class's probabilities across the batch. Several
    teachers: their distributions' weighted average (as kd)."""
    student = F.softmax(student_logits / temperature, dim=1)
    teacher = soft_targets(teacher_logits, temperature, teacher_weights).detach()
    inter = 1 - pearson_correlation(student, teacher).mean()
    intra = 1 - pearson_correlation(student.t(), teacher.t()).mean()
    return temperature ** 2 * (beta * inter + gamma * intra)


class Term(DistillTerm):
    needs = "logits"

    def __init__(self, beta: float = 1.0, gamma: float = 1.0):
        super().__init__()
        self.beta = beta  # inter-class relation (within a sample)
        self.gamma = gamma  # intra-class relation (across the batch)

    def regression_problem(self) -> str:
        return ("dist correlates class probabilities: use distill=kd (the MSE between student "
                "and teacher predictions)")

    def forward(self, student, teachers, inputs: TermInputs):
        return dist_loss(student.logits, [teacher.logits for teacher in teachers], self.beta,
                         self.gamma, inputs.temperature, inputs.teacher_weights)
