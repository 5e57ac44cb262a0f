"""What every distillation term is: a module from (student taps, teacher taps) to a scalar.

Adding a method is one file in ``lepton_exp/distill/methods/`` defining ``Term`` (a
:class:`DistillTerm` subclass whose ``__init__`` keyword arguments are the method's options)
and one yaml in ``conf/distill/``. The math lives in a plain function next to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence

import torch
from torch import nn

from lepton_exp.distill.layers import check_heads
from lepton_exp.models.taps import Taps


@dataclass
class TermInputs:
    """Per-step values every term may use."""

    labels: torch.Tensor
    temperature: float
    teacher_weights: Sequence[float]  # one per teacher, summing to 1
    regression: bool = False  # the logits are N x 1 predictions of a real-valued target


class DistillTerm(nn.Module):
    #: what the term reads from the taps: "logits", "features", "attentions" or "scores"
    needs: ClassVar[str] = "logits"
    #: logit-matching terms whose weight defaults to (1 - alpha), alpha weighting cross-entropy
    weight_from_alpha: ClassVar[bool] = False
    #: terms whose taps are part of their definition (distill.layers does not apply)
    fixed_layers: ClassVar[bool] = False

    def __init__(self, layers: Optional[dict] = None):
        super().__init__()
        self.layers_spec = layers  # per-term override of distill.layers
        self.pairs: list[tuple[int, int]] = []  # (student tap, teacher tap), set by bind()
        self.layers_key = "distill.layers"  # the setting that chose the pairs (for errors)

    def bind(self, student: Taps, teacher: Taps, pairs: list[tuple[int, int]]) -> None:
        """Called once with the taps of a dry forward pass: check shapes, build connectors."""
        self.pairs = pairs

    def regression_problem(self) -> Optional[str]:
        """Why this term cannot distil on regression data, with what to use instead; None
        when it can (terms on hidden states and attention do not look at the outputs)."""
        return None

    def forward(self, student: Taps, teachers: Sequence[Taps],
                inputs: TermInputs) -> torch.Tensor:
        raise NotImplementedError


class AttentionTerm(DistillTerm):
    """A term over attention layers: pairs of layers 1..L (layer i is ``scores[i - 1]``, the
    pre-softmax scores), ``heads=match`` (equal head counts) or ``mean`` (head-averaged);
    subclasses give the loss of one layer pair."""

    needs = "scores"
    name = ""

    def __init__(self, heads: str = "match", layers: Optional[dict] = None):
        super().__init__(layers)
        self.heads = heads

    def bind(self, student: Taps, teacher: Taps, pairs: list[tuple[int, int]]) -> None:
        super().bind(student, teacher, pairs)
        check_heads(self.name, self.heads, student.scores, teacher.scores, pairs)

    def pair_loss(self, student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                  attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, student: Taps, teachers: Sequence[Taps],
                inputs: TermInputs) -> torch.Tensor:
        teacher = teachers[0]
        total = student.logits.new_zeros(())
        for s, t in self.pairs:
            total = total + self.pair_loss(student.scores[s - 1], teacher.scores[t - 1],
                                           student.attention_mask)
        return total
