"""Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018): the student's conditional
distribution of which samples are close (cosine similarity) matches the teacher's, by KL."""

from __future__ import annotations

import torch

from lepton_exp.distill.base import DistillTerm, TermInputs
from lepton_exp.distill.layers import check_vectors

EPS = 1e-7  # the reference's, in the normalisation and inside the log ratio


def neighbour_distribution(embedding: torch.Tensor) -> torch.Tensor:
    """N x N: cosine similarities mapped to [0, 1] by (x + 1) / 2, rows normalised to sum 1."""
    unit = embedding / (embedding.norm(dim=1, keepdim=True) + EPS)
    unit = unit.masked_fill(unit.isnan(), 0.0)  # as the reference: NaN (inf / inf) to 0
    similarity = (unit @ unit.t() + 1.0) / 2.0
    return similarity / similarity.sum(dim=1, keepdim=True)


def pkt_loss(student_embedding: torch.Tensor, teacher_embedding: torch.Tensor) -> torch.Tensor:
    """Mean over the N x N entries of t * log((t + eps) / (s + eps)), t and s the teacher's
    and the student's neighbour distributions (a KL per row, averaged, over N)."""
    student = neighbour_distribution(student_embedding)
    teacher = neighbour_distribution(teacher_embedding.detach())
    return (teacher * torch.log((teacher + EPS) / (student + EPS))).mean()


class Term(DistillTerm):
    needs = "embedding"

    def bind(self, student, teacher, pairs):
        super().bind(student, teacher, pairs)
        check_vectors("pkt", student.embedding, teacher.embedding)

    def forward(self, student, teachers, inputs: TermInputs):
        return pkt_loss(student.embedding, teachers[0].embedding)
