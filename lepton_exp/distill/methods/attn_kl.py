"""MiniLM self-attention distribution transfer (Wang et al. 2020): KL(teacher ‖ student)
between attention probabilities, per head and query, averaged over heads and real queries.
MiniLM uses the last layer only (conf/distill/attn_kl.yaml: layers last)."""

from __future__ import annotations

from typing import Optional

import torch

from lepton_exp.distill.base import AttentionTerm
from lepton_exp.distill.layers import pair_mask, reduce_heads

EPSILON = 1e-12  # probabilities of masked keys are exactly 0: keep their logs finite


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


def attention_distribution(scores: torch.Tensor,
                           attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Softmax over real keys of pre-softmax scores: the attention probabilities before
    attention dropout (the maps transformers returns are taken after it while training)."""
    if attention_mask is not None:
        scores = scores.masked_fill(attention_mask[:, None, None, :] == 0, float("-inf"))
    return scores.softmax(dim=-1)


class Term(AttentionTerm):
    # From the scores, not the returned attention maps: in training mode those carry the
    # student's attention dropout, which would add a large constant and noise to the KL.
    name = "attn_kl"

    def pair_loss(self, student_scores, teacher_scores, attention_mask):
        pair = reduce_heads(self.heads, attention_distribution(student_scores, attention_mask),
                            attention_distribution(teacher_scores, attention_mask))
        return attention_kl_loss(*pair, attention_mask)
