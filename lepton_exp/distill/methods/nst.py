"""Neuron selectivity transfer (Huang & Wang, 2017): the distribution of the student's
channel maps (each channel's spatial activation pattern) matches the teacher's, by
maximum mean discrepancy."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from lepton_exp.distill.base import DistillTerm, TermInputs
from lepton_exp.distill.layers import check_maps, pool_to_common_size


def channel_maps(feature: torch.Tensor) -> torch.Tensor:
    """N x C x (H*W): each channel's map flattened and L2-normalised."""
    return F.normalize(feature.flatten(2), dim=2)


def mean_poly_kernel(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Mean over samples and channel pairs of the polynomial kernel (a·b)² (degree 2, c = 0,
    the paper's and the CRD code's choice) between the channel maps of two features."""
    return (first @ second.transpose(1, 2)).pow(2).mean()


def nst_loss(student_features: Sequence[torch.Tensor],
             teacher_features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over pairs of the squared MMD between the channel maps of the two features:
    mean k(t, t) + mean k(s, s) - 2 mean k(s, t); the larger map of a pair is adaptive-
    average-pooled to the smaller spatial size first. Channel counts may differ."""
    total = student_features[0].new_zeros(())
    for student, teacher in zip(student_features, teacher_features, strict=True):
        student, teacher = pool_to_common_size(student, teacher.detach())
        student, teacher = channel_maps(student), channel_maps(teacher)
        total = total + (mean_poly_kernel(teacher, teacher) + mean_poly_kernel(student, student)
                         - 2 * mean_poly_kernel(student, teacher))
    return total


class Term(DistillTerm):
    needs = "features"

    def bind(self, student, teacher, pairs):
        super().bind(student, teacher, pairs)
        check_maps("nst", student, teacher, pairs, self.layers_key)

    def forward(self, student, teachers, inputs: TermInputs):
        teacher = teachers[0]  # feature terms follow the first (primary) teacher
        return nst_loss([student.features[s] for s, _ in self.pairs],
                        [teacher.features[t] for _, t in self.pairs])
