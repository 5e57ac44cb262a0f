"""Decoupled knowledge distillation (Zhao et al., CVPR 2022): KD split into a target-class
term (TCKD) and a non-target-class term (NCKD) that are weighted independently."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lepton_exp.distill.base import DistillTerm, TermInputs

# Subtracted from the target logit so it vanishes from the non-target softmax (mdistiller's choice).
_MASK_OFFSET = 1000.0


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
             temperature: float, tckd_weight: float = 1.0,
             nckd_weight: float = 8.0) -> torch.Tensor:
    """tckd_weight * KL(b_t || b_s) + nckd_weight * KL(p̂_t || p̂_s), each batch-mean times T².

    b = [p_target, 1 - p_target] (binary target/non-target split), p̂ = distribution over the
    non-target classes only; all at temperature T (paper's Eq. 6, alpha/beta = tckd/nckd).
    """
    target = F.one_hot(labels, student_logits.shape[1]).bool()
    p_student = F.softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)

    def binary(p: torch.Tensor) -> torch.Tensor:
        # The non-target mass as a sum, not 1 - p_target: it keeps its precision (and its
        # gradient) when the target probability is within float epsilon of 1.
        return torch.cat([(p * target).sum(dim=1, keepdim=True),
                          (p * ~target).sum(dim=1, keepdim=True)], dim=1)

    log_b_student = torch.log(binary(p_student).clamp_min(torch.finfo(p_student.dtype).tiny))
    tckd = F.kl_div(log_b_student, binary(p_teacher), reduction="batchmean") * temperature ** 2
    offset = _MASK_OFFSET * target
    log_nt_student = F.log_softmax(student_logits / temperature - offset, dim=1)
    nt_teacher = F.softmax(teacher_logits / temperature - offset, dim=1)
    nckd = F.kl_div(log_nt_student, nt_teacher, reduction="batchmean") * temperature ** 2
    return tckd_weight * tckd + nckd_weight * nckd


class Term(DistillTerm):
    needs = "logits"

    def __init__(self, tckd_weight: float = 1.0, nckd_weight: float = 8.0):
        super().__init__()
        self.tckd_weight = tckd_weight
        self.nckd_weight = nckd_weight

    def regression_problem(self) -> str:
        return ("dkd splits class probabilities into target and non-target classes: use "
                "distill=kd (the MSE between student and teacher predictions)")

    def forward(self, student, teachers, inputs: TermInputs):
        # Several teachers: their DKD losses, weighted like their soft targets in KD.
        return sum(weight * dkd_loss(student.logits, teacher.logits, inputs.labels,
                                     inputs.temperature, self.tckd_weight, self.nckd_weight)
                   for weight, teacher in zip(inputs.teacher_weights, teachers, strict=True))
