"""Knowledge distillation (Hinton, Vinyals & Dean, 2015) and its hard-target variant; on
regression data (GLUE STS-B), the MSE between student and teacher predictions."""

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


def regression_kd_loss(student_predictions: torch.Tensor,
                       teacher_predictions: Sequence[torch.Tensor],
                       teacher_weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """MSE between the student's predictions and the (weighted mean of the) teachers': KD for
    a real-valued output, as DistilBERT/TinyBERT-style GLUE code does for STS-B (there is no
    distribution to soften: the temperature does not apply)."""
    weights = teacher_weights or [1.0 / len(teacher_predictions)] * len(teacher_predictions)
    total = float(sum(weights))
    target = sum(w / total * p for w, p in zip(weights, teacher_predictions, strict=True))
    return F.mse_loss(student_predictions, target)


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

    def regression_problem(self) -> Optional[str]:
        if self.hard:
            return ("kd.hard=true takes the teacher's argmax class: drop it (kd then matches "
                    "the teacher's predictions by MSE)")
        return None

    def forward(self, student, teachers, inputs: TermInputs):
        logits = [teacher.logits for teacher in teachers]
        if inputs.regression:
            return regression_kd_loss(student.logits, logits, inputs.teacher_weights)
        if self.hard:
            return hard_target_loss(student.logits, logits, inputs.teacher_weights)
        return kd_loss(student.logits, logits, inputs.temperature, inputs.teacher_weights)
