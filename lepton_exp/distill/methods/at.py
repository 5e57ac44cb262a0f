"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017): match spatial attention maps."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from lepton_exp.distill.base import DistillTerm, TermInputs
from lepton_exp.distill.layers import check_spatial, pool_to_common_size


def attention_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Channel mean of |a|^p, flattened and L2-normalised per sample: N x (H*W)."""
    # even p: a^p is |a|^p already; abs() would cost a pass over the feature map every step
    powered = feature.pow(p) if float(p).is_integer() and int(p) % 2 == 0 else \
        feature.abs().pow(p)
    return F.normalize(powered.mean(dim=1).flatten(1), dim=1)


def attention_transfer_loss(student_features: Sequence[torch.Tensor],
                            teacher_features: Sequence[torch.Tensor],
                            p: float = 2.0) -> torch.Tensor:
    """Sum over pairs of the mean squared difference of attention maps; the larger map of a
    pair is adaptive-average-pooled to the smaller spatial size first."""
    total = student_features[0].new_zeros(())
    for student, teacher in zip(student_features, teacher_features, strict=True):
        student, teacher = pool_to_common_size(student, teacher)
        total = total + (attention_map(student, p) - attention_map(teacher, p)).pow(2).mean()
    return total


class Term(DistillTerm):
    needs = "features"

    def __init__(self, p: float = 2.0, layers: dict | None = None):
        super().__init__(layers)
        self.p = p

    def bind(self, student, teacher, pairs):
        super().bind(student, teacher, pairs)
        for s, t in pairs:
            check_spatial("at", s, t, student.features[s], teacher.features[t], self.layers_key)

    def forward(self, student, teachers, inputs: TermInputs):
        teacher = teachers[0]  # feature terms follow the first (primary) teacher
        return attention_transfer_loss([student.features[s] for s, _ in self.pairs],
                                       [teacher.features[t] for _, t in self.pairs], self.p)
