"""Knowledge distillation (Hinton, Vinyals & Dean, 2015) and its hard-target variant."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from lepton_exp.distill.base import DistillTerm, TermInputs


def soft_targets(teacher_logits: torch.Tensor | Sequence[torch.Tensor], temperature: float,
                 teacher_weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Teacher probabilities at ``temperature``; several teachers give the weighted average of
    their softened distributions (multi-teacher distillation)."""
    if isinstance(teacher_logits, torch.Tensor):
        return F.softmax(teacher_logits / temperature, dim=1)
    weights = teacher_weights or [1.0 / len(teacher_logits)] * len(teacher_logits)
    total = float(sum(weights))
    return sum(w / total * F.softmax(logits / temperature, dim=1)
               for w, logits in zip(weights, teacher_logits, strict=True))


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | Sequence[torch.Tensor],
            temperature: float, teacher_weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """KL(teacher_T || student_T), batch mean, times T² (keeps gradient scale independent of T,
    as in the paper, RepDistiller and mdistiller; TextBrewer/TinyBERT omit the T²)."""
    targets = soft_targets(teacher_logits, temperature, teacher_weights)
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    return F.kl_div(log_student, targets, reduction="batchmean") * temperature ** 2


def hard_target_loss(student_logits: torch.Tensor,
                     teacher_logits: torch.Tensor | Sequence[torch.Tensor],
                     teacher_weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Cross-entropy against the teacher's argmax (of the weighted average of the teachers)."""
    labels = soft_targets(teacher_logits, 1.0, teacher_weights).argmax(dim=1)
    return F.cross_entropy(student_logits, labels)


class Term(DistillTerm):
    needs = "logits"
    weight_from_alpha = True

    def __init__(self, hard: bool = False):
        super().__init__()
        self.hard = hard  # teacher argmax as labels instead of softened distributions

    def forward(self, student, teachers, inputs: TermInputs):
        logits = [teacher.logits for teacher in teachers]
        if self.hard:
            return hard_target_loss(student.logits, logits, inputs.teacher_weights)
        return kd_loss(student.logits, logits, inputs.temperature, inputs.teacher_weights)
