"""MiniLM self-attention distribution transfer (Wang et al. 2020): KL(teacher ‖ student)
between attention probabilities, per head and query, averaged over heads and real queries.
MiniLM uses the last layer only (the default here: layers last)."""

from __future__ import annotations

from typing import Optional

import torch

from lepton_exp.distill.base import DistillTerm, TermInputs
from lepton_exp.distill.layers import check_heads, pair_mask, reduce_heads

EPSILON = 1e-12  # probabilities of masked keys are exactly 0: keep their logs finite
LAST_LAYER = {"student": "last", "teacher": "last"}


def attention_kl_loss(student_attention: torch.Tensor, teacher_attention: torch.Tensor,
                      attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sum over keys of t * (log t - log s), averaged over heads and real queries
    (N x heads x L x L probabilities; padded keys and queries contribute nothing)."""
    teacher_log = teacher_attention.clamp_min(EPSILON).log()
    student_log = student_attention.clamp_min(EPSILON).log()
    pointwise = teacher_attention * (teacher_log - student_log)
    if attention_mask is None:
        return pointwise.sum(-1).mean()
    mask = pair_mask(attention_mask).to(pointwise.dtype)  # N x 1 x L x L
    per_query = (pointwise * mask).sum(-1)  # N x heads x L
    queries = mask[..., 0]  # N x 1 x L: the real query rows
    return (per_query * queries).sum() / (queries.sum() * per_query.shape[1]).clamp_min(1.0)


class Term(DistillTerm):
    needs = "attentions"

    def __init__(self, heads: str = "match", layers: dict | None = None):
        super().__init__(layers if layers is not None else LAST_LAYER)
        self.heads = heads

    def bind(self, student, teacher, pairs):
        super().bind(student, teacher, pairs)
        check_heads("attn_kl", self.heads, student.attentions, teacher.attentions, pairs)

    def forward(self, student, teachers, inputs: TermInputs):
        teacher = teachers[0]
        total = student.logits.new_zeros(())
        for s, t in self.pairs:  # attention taps: layer i is attentions[i - 1]
            pair = reduce_heads(self.heads, student.attentions[s - 1],
                                teacher.attentions[t - 1])
            total = total + attention_kl_loss(*pair, student.attention_mask)
        return total
