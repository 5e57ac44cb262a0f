"""FitNets (Romero et al., ICLR 2015): regress teacher features from the student's through a
learned connector: ``conv_bn`` (1x1 conv + BN, the default) or ``convreg`` (the CRD code's
ConvReg: conv with bias, BN, ReLU, matching the spatial size too)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lepton_exp.distill.base import DistillTerm, TermInputs
from lepton_exp.distill.layers import connector_for, convreg_connector, pool_to_common_size
from lepton_exp.errors import ConfigError

CONNECTORS = {"conv_bn": connector_for, "convreg": convreg_connector}


def hint_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """MSE between the connector's output and the teacher feature (mean over all elements)."""
    return F.mse_loss(student_feature, teacher_feature)


class Term(DistillTerm):
    needs = "features"

    def __init__(self, connector: str = "conv_bn", layers: dict | None = None):
        super().__init__(layers)
        if connector not in CONNECTORS:
            raise ConfigError(f"distill.terms.fitnet.connector={connector} is not one of "
                              f"{', '.join(CONNECTORS)}")
        self.connector = connector
        # One connector per pair, built in bind() from the shapes of a dry forward pass; they
        # train with the student and are not part of the exported student.
        self.connectors = nn.ModuleList()

    def bind(self, student, teacher, pairs):
        super().bind(student, teacher, pairs)
        self.connectors = nn.ModuleList(
            CONNECTORS[self.connector]("fitnet", s, t, student.features[s],
                                       teacher.features[t], self.layers_key)
            for s, t in pairs)

    def forward(self, student, teachers, inputs: TermInputs):
        teacher = teachers[0]
        total = student.logits.new_zeros(())
        for connector, (s, t) in zip(self.connectors, self.pairs, strict=True):
            regressed, target = pool_to_common_size(connector(student.features[s]),
                                                    teacher.features[t])
            total = total + hint_loss(regressed, target)
        return total
