"""TinyBERT attention transfer (Jiao et al. 2020): MSE between the student's and the
teacher's pre-softmax attention scores, per head, over real (query, key) token pairs."""

from __future__ import annotations

from typing import Optional

import torch

from lepton_exp.distill.base import DistillTerm, TermInputs
from lepton_exp.distill.layers import check_heads, pair_mask, reduce_heads


def attention_score_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                         attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared difference of N x heads x L x L scores over real query/key pairs
    (TinyBERT zeroes padded positions; here they are left out of the mean as well)."""
    squared = (student_scores - teacher_scores).pow(2)
    if attention_mask is None:
        return squared.mean()
    mask = pair_mask(attention_mask).to(squared.dtype)  # N x 1 x L x L
    return (squared * mask).sum() / (mask.sum() * squared.shape[1]).clamp_min(1.0)


class Term(DistillTerm):
    needs = "scores"

    def __init__(self, heads: str = "match", layers: dict | None = None):
        super().__init__(layers)
        self.heads = heads

    def bind(self, student, teacher, pairs):
        super().bind(student, teacher, pairs)
        check_heads("attn_mse", self.heads, student.scores, teacher.scores, pairs)

    def forward(self, student, teachers, inputs: TermInputs):
        teacher = teachers[0]
        total = student.logits.new_zeros(())
        for s, t in self.pairs:  # attention taps: layer i is scores[i - 1]
            pair = reduce_heads(self.heads, student.scores[s - 1], teacher.scores[t - 1])
            total = total + attention_score_loss(*pair, student.attention_mask)
        return total
