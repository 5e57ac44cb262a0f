"""Hidden-state transfer (TinyBERT, Jiao et al. 2020): MSE between a learned linear
projection of the student's hidden states and the teacher's, over the real (unpadded)
tokens, summed over the paired layers (taps: 0 = embedding output, i = layer i)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from lepton_exp.distill.base import DistillTerm, TermInputs
from lepton_exp.distill.layers import check_tokens, connector_for


def hidden_state_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                      attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over real tokens and hidden units of the squared difference (N x L x H inputs;
    ``attention_mask`` N x L, 1 = real token: padded positions contribute nothing)."""
    per_token = (student_hidden - teacher_hidden).pow(2).mean(dim=-1)
    if attention_mask is None:
        return per_token.mean()
    mask = attention_mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp_min(1.0)


class Term(DistillTerm):
    needs = "features"
    name = "hidden"

    def __init__(self, layers: dict | None = None):
        super().__init__(layers)
        self.connectors = nn.ModuleList()  # one projection per pair, trained with the student

    def bind(self, student, teacher, pairs):
        super().bind(student, teacher, pairs)
        for s, t in pairs:
            check_tokens(self.name, s, t, student.features[s], teacher.features[t],
                         self.layers_key)
        self.connectors = nn.ModuleList(
            connector_for(self.name, s, t, student.features[s], teacher.features[t],
                          self.layers_key) for s, t in pairs)

    def forward(self, student, teachers, inputs: TermInputs):
        teacher = teachers[0]
        total = student.logits.new_zeros(())
        for connector, (s, t) in zip(self.connectors, self.pairs, strict=True):
            total = total + hidden_state_loss(connector(student.features[s]),
                                              teacher.features[t], student.attention_mask)
        return total
