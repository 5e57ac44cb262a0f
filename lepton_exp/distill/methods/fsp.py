"""FSP (Yim et al., CVPR 2017, "A Gift from Knowledge Distillation"): match the flow of
solution procedure, the Gram matrices between consecutive stages' maps.

As in the CRD code, FSP is an initialisation: for ``init_epochs`` the student's layers train
on this loss alone, then the student trains on the labels alone (``init_epochs=0`` adds the
loss to distillation instead). It reads every tap, the stem included (the CRD code's
``feat[:-1]``), and needs equal channel counts at each tap: the matrices are compared entry
by entry.
"""

from __future__ import annotations

from typing import Sequence

import torch

from lepton_exp.distill.base import PhasedTerm, TermInputs, backbone_parameters
from lepton_exp.distill.layers import check_spatial, pool_to_common_size
from lepton_exp.errors import ConfigError


def fsp_matrices(features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """For each pair of consecutive maps (the larger pooled to the smaller size), the N x
    C_lower x C_upper matrix of spatially averaged channel products."""
    matrices = []
    for lower, upper in zip(features[:-1], features[1:]):
        lower, upper = pool_to_common_size(lower.float(), upper.float())
        with torch.autocast(lower.device.type, enabled=False):  # sums overflow fp16
            matrices.append(torch.einsum("nahw,nbhw->nab", lower, upper)
                            / (lower.shape[-2] * lower.shape[-1]))
    return matrices


def fsp_loss(student_features: Sequence[torch.Tensor],
             teacher_features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over consecutive-map pairs of the mean squared difference of FSP matrices."""
    total = student_features[0].new_zeros(())
    for student, teacher in zip(fsp_matrices(student_features), fsp_matrices(teacher_features),
                                strict=True):
        total = total + (student - teacher).pow(2).mean()
    return total


class Term(PhasedTerm):
    needs = "features"
    fixed_layers = True  # every tap, in order

    def bind(self, student, teacher, pairs):
        if len(student.features) != len(teacher.features):
            raise ConfigError(f"distill term fsp pairs every tap: the student has "
                              f"{len(student.features)} and the teacher "
                              f"{len(teacher.features)}; use models with as many stages")
        pairs = [(index, index) for index in range(len(student.features))]
        super().bind(student, teacher, pairs)
        for s, t in pairs:
            check_spatial("fsp", s, t, student.features[s], teacher.features[t],
                          "distill.terms.fsp")
            if student.features[s].shape[1] != teacher.features[t].shape[1]:
                raise ConfigError(
                    f"distill term fsp needs equal channel counts at every tap, but tap {s} "
                    f"has {student.features[s].shape[1]} (student) and "
                    f"{teacher.features[t].shape[1]} (teacher): pick a pair of the same "
                    "widths (e.g. resnet20 <- resnet56), or another method")

    def init_loss(self, student, teacher):
        return fsp_loss(student.features, teacher.features)

    def init_parameters(self, student_model):
        return backbone_parameters(student_model)

    def forward(self, student, teachers, inputs: TermInputs):
        return self.init_loss(student, teachers[0])
