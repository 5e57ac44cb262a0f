"""TinyBERT attention transfer (Jiao et al. 2020): MSE between the student's and the
teacher's pre-softmax attention scores, per head, over real (query, key) token pairs."""

from __future__ import annotations

from typing import Optional

import torch

from lepton_exp.distill.base import AttentionTerm
from lepton_exp.distill.layers import pair_mask, reduce_heads


def attention_score_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                         attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared difference of N x heads x L x L scores over real query/key pairs
    (TinyBERT zeroes padded positions; here they are left out of the mean as well)."""
    squared = (student_scores - teacher_scores).pow(2)
    if attention_mask is None:
        return squared.mean()
    mask = pair_mask(attention_mask).to(squared.dtype)  # N x 1 x L x L
    return (squared * mask).sum() / (mask.sum() * squared.shape[1]).clamp_min(1.0)


class Term(AttentionTerm):
    name = "attn_mse"

    def pair_loss(self, student_scores, teacher_scores, attention_mask):
        return attention_score_loss(*reduce_heads(self.heads, student_scores, teacher_scores),
                                    attention_mask)
