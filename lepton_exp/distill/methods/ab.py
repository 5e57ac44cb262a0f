"""Activation boundaries (Heo et al., AAAI 2019): teach the student where the teacher's
neurons switch on, with a margin loss on pre-activation maps.

As in the CRD code, AB is an initialisation: for ``init_epochs`` the student's layers and the
connectors train on this loss alone, then the student trains on the labels alone
(``init_epochs=0`` adds the loss to distillation instead). It reads the stages' maps before
their final ReLU (``preact``), stages 1..n; a connector (the CRD code's ConvReg without
ReLU) bridges a stage whose channels or size differ.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from lepton_exp.distill.base import PhasedTerm, TermInputs, backbone_parameters
from lepton_exp.distill.layers import check_spatial, convreg_connector


def activation_boundary_loss(student: torch.Tensor, teacher: torch.Tensor,
                             margin: float = 1.0) -> torch.Tensor:
    """Squared hinge on the student's pre-activations, summed: pushed below -margin where the
    teacher's neuron is off (<= 0), above +margin where it is on."""
    off = (student > -margin) & (teacher <= 0)
    on = (student <= margin) & (teacher > 0)
    return ((student + margin).pow(2) * off + (student - margin).pow(2) * on).sum()


def ab_loss(student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor],
            margin: float = 1.0) -> torch.Tensor:
    """Over pairs i = 0..n-1, weight 2^(i - n + 1) (the last pair counts most) times the
    boundary loss, divided by the batch size and scaled by 3/1000 (the CRD code's scale)."""
    count = len(student_maps)
    batch = student_maps[0].shape[0]
    total = student_maps[0].new_zeros(())
    for index, (student, teacher) in enumerate(zip(student_maps, teacher_maps, strict=True)):
        weight = 2.0 ** (index - count + 1)
        total = total + weight * activation_boundary_loss(student, teacher, margin)
    return total / batch * 3 / 1000


class Term(PhasedTerm):
    needs = "preact"

    def __init__(self, margin: float = 1.0, init_epochs: int = 30,
                 init_lr: float | None = None, layers: dict | None = None):
        super().__init__(init_epochs, init_lr, layers)
        self.margin = margin
        self.connectors = nn.ModuleList()

    def bind(self, student, teacher, pairs):
        super().bind(student, teacher, pairs)
        connectors = []
        for s, t in pairs:
            student_map, teacher_map = student.preact[s], teacher.preact[t]
            check_spatial("ab", s, t, student_map, teacher_map, self.layers_key)
            same = student_map.shape[1:] == teacher_map.shape[1:]
            connectors.append(nn.Identity() if same else convreg_connector(
                "ab", s, t, student_map, teacher_map, self.layers_key, relu=False))
        self.connectors = nn.ModuleList(connectors)

    def init_loss(self, student, teacher):
        return ab_loss([connector(student.preact[s])
                        for connector, (s, _) in zip(self.connectors, self.pairs, strict=True)],
                       [teacher.preact[t] for _, t in self.pairs], self.margin)

    def init_parameters(self, student_model):
        return [*self.connectors.parameters(), *backbone_parameters(student_model)]

    def forward(self, student, teachers, inputs: TermInputs):
        return self.init_loss(student, teachers[0])
