"""Similarity-preserving distillation (Tung & Mori, ICCV 2019): the student's batch
similarities (which samples look alike to a layer) match the teacher's."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lepton_exp.distill.base import DistillTerm, TermInputs
from lepton_exp.distill.layers import check_maps


def batch_similarity(feature: torch.Tensor) -> torch.Tensor:
    """N x N Gram matrix of the flattened per-sample features, each row L2-normalised."""
    flat = feature.flatten(1).float()  # float32: |f|^2 of a stage map overflows fp16
    with torch.autocast(feature.device.type, enabled=False):
        return F.normalize(flat @ flat.t(), dim=1)


def sp_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius distance of the two batch-similarity matrices over batch²; the
    feature shapes may differ (only the batch size must agree)."""
    batch = student_feature.shape[0]
    difference = batch_similarity(teacher_feature.detach()) - batch_similarity(student_feature)
    return difference.pow(2).sum() / batch ** 2


class Term(DistillTerm):
    needs = "features"

    def bind(self, student, teacher, pairs):
        super().bind(student, teacher, pairs)
        check_maps("sp", student, teacher, pairs, self.layers_key)

    def forward(self, student, teachers, inputs: TermInputs):
        teacher = teachers[0]  # feature terms follow the first (primary) teacher
        total = student.logits.new_zeros(())
        for s, t in self.pairs:
            total = total + sp_loss(student.features[s], teacher.features[t])
        return total
