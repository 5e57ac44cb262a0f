"""Correlation congruence (Peng et al., ICCV 2019), as the CRD code runs it: both
embeddings projected by trainable linear maps, then a product of consecutive samples'
differences (the code's ``Correlation``; not the paper's kernel correlation matrices)."""

from __future__ import annotations

import torch
from torch import nn

from lepton_exp.distill.base import DistillTerm, TermInputs
from lepton_exp.distill.layers import check_vectors


def cc_loss(student_embedding: torch.Tensor, teacher_embedding: torch.Tensor) -> torch.Tensor:
    """With d = |s - t| per sample (both projected to one size): the mean over consecutive
    samples (i, i+1) of sum over dims of d_i * d_(i+1). Gradients reach both arguments: the
    teacher's projection trains with the student."""
    delta = (student_embedding - teacher_embedding).abs()
    products = (delta[:-1] * delta[1:]).sum(dim=1)
    # one sample has no consecutive pair: 0 instead of the mean of nothing (NaN)
    return products.sum() / max(1, len(products))


class Term(DistillTerm):
    needs = "embedding"

    def __init__(self, embedding_size: int = 128):
        super().__init__()
        self.embedding_size = embedding_size
        # Built in bind() from the embeddings' sizes; they train with the student and are not
        # part of the exported student.
        self.student_projection: nn.Module = nn.Identity()
        self.teacher_projection: nn.Module = nn.Identity()

    def bind(self, student, teacher, pairs):
        super().bind(student, teacher, pairs)
        check_vectors("cc", student.embedding, teacher.embedding)
        self.student_projection = nn.Linear(student.embedding.shape[1], self.embedding_size)
        self.teacher_projection = nn.Linear(teacher.embedding.shape[1], self.embedding_size)

    def forward(self, student, teachers, inputs: TermInputs):
        teacher_embedding = teachers[0].embedding.detach()  # trains the projection only
        return cc_loss(self.student_projection(student.embedding),
                       self.teacher_projection(teacher_embedding))
