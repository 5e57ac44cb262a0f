"""What every distillation term is: a module from (student taps, teacher taps) to a scalar.

Adding a method is one file in ``lepton_exp/distill/methods/`` defining ``Term`` (a
:class:`DistillTerm` subclass whose ``__init__`` keyword arguments are the method's options)
and one yaml in ``conf/distill/``. The math lives in a plain function next to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence

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
    indices: Optional[torch.Tensor] = None  # the samples' indices in the training set
    step: int = 0  # optimiser steps so far (seeds per-step sampling, e.g. CRD's negatives)


# The taps whose layers distill.layers pairs, per kind of tap a term reads.
PAIRED_TAPS = {"features": "features", "preact": "features", "attentions": "attentions",
               "scores": "scores"}


class DistillTerm(nn.Module):
    #: what the term reads from the taps: "logits", "embedding" (the classifier's input),
    #: "features", "preact" (stage outputs before their final ReLU), "attentions", "scores"
    needs: ClassVar[str] = "logits"
    #: taps read besides ``needs`` (e.g. ReviewKD: the embedding beside the stage maps)
    also_needs: ClassVar[tuple[str, ...]] = ()
    #: whether training batches must carry their samples' indices (``TermInputs.indices``)
    needs_indices: ClassVar[bool] = False
    #: logit-matching terms whose weight defaults to (1 - alpha), alpha weighting cross-entropy
    weight_from_alpha: ClassVar[bool] = False
    #: terms whose taps are part of their definition (distill.layers does not apply)
    fixed_layers: ClassVar[bool] = False

    def __init__(self, layers: Optional[dict] = None):
        super().__init__()
        self.layers_spec = layers  # per-term override of distill.layers
        self.pairs: list[tuple[int, int]] = []  # (student tap, teacher tap), set by bind()
        self.layers_key = "distill.layers"  # the setting that chose the pairs (for errors)

    @classmethod
    def taps_read(cls) -> set[str]:
        return {cls.needs, *cls.also_needs}

    @classmethod
    def pairs_over(cls) -> Optional[str]:
        """The taps whose layers this term pairs (None: it reads whole-model outputs)."""
        return PAIRED_TAPS.get(cls.needs)

    def bind(self, student: Taps, teacher: Taps, pairs: list[tuple[int, int]]) -> None:
        """Called once with the taps of a dry forward pass: check shapes, build connectors."""
        self.pairs = pairs

    def bind_models(self, student: nn.Module, teacher: nn.Module) -> None:
        """Called once after ``bind`` with the student and the primary teacher themselves, for
        terms that read more of a model than its taps (OFD: the teacher's BN before each
        ReLU, named in ``feature_info``). Copy what is needed (as buffers); keep no reference
        to the models, whose parameters must not become the term's."""

    def attach_data(self, train_labels: Any) -> None:
        """Called once before training with the training set's labels (numpy, one per
        sample, in index order) for terms that set ``needs_indices``."""

    def regression_problem(self) -> Optional[str]:
        """Why this term cannot distil on regression data, with what to use instead; None
        when it can (terms on hidden states and attention do not look at the outputs)."""
        return None

    def forward(self, student: Taps, teachers: Sequence[Taps],
                inputs: TermInputs) -> torch.Tensor:
        raise NotImplementedError


class PhasedTerm(DistillTerm):
    """A term with an initialisation phase before distillation (AB, FSP, FT in the CRD code's
    ``init`` stage): for ``init_epochs`` epochs, ``init_parameters`` train on ``init_loss``
    alone at ``init_lr`` (default: optim.lr), without a schedule; then the student trains as
    usual, with this term's loss (``after_init``) or on the labels alone. The phase is a run
    of its own (lepton_exp.stages.distill_init) inside the distillation run's directory."""

    #: whether the term adds its loss after the initialisation phase (FT) or the student then
    #: trains on the labels alone (AB, FSP: the CRD code's ``loss_kd = 0``)
    after_init: ClassVar[bool] = False
    #: whether the initialisation phase trains the student's own layers (AB, FSP) or only the
    #: term's modules (FT's paraphraser)
    init_trains_student: ClassVar[bool] = True

    def __init__(self, init_epochs: int = 30, init_lr: Optional[float] = None,
                 layers: Optional[dict] = None):
        super().__init__(layers)
        self.init_epochs = init_epochs
        self.init_lr = init_lr

    def init_loss(self, student: Optional[Taps], teacher: Taps) -> torch.Tensor:
        """The phase's loss; ``student`` is None when no phased term trains the student
        (its forward pass is skipped)."""
        raise NotImplementedError

    def init_parameters(self, student_model: nn.Module) -> list[nn.Parameter]:
        """What the initialisation phase trains."""
        raise NotImplementedError

    def finish_init(self) -> None:
        """Called before distillation with the phase's state loaded (FT freezes its
        paraphraser)."""


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter but the classifier's (the CRD code's ``get_feat_modules``)."""
    from lepton_exp.models.taps import classifier_module

    head = {id(p) for p in classifier_module(model).parameters()}
    return [p for p in model.parameters() if id(p) not in head]


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
