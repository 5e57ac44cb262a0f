"""Variational information distillation (Ahn et al., CVPR 2019): maximise a variational
lower bound of the mutual information between teacher and student maps, i.e. the Gaussian
log-likelihood of the teacher's map under a mean regressed from the student's map and a
learned per-channel variance."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lepton_exp.distill.base import DistillTerm, TermInputs
from lepton_exp.distill.layers import check_maps, pool_to_common_size


def vid_loss(predicted_mean: torch.Tensor, predicted_variance: torch.Tensor,
             target: torch.Tensor) -> torch.Tensor:
    """Mean over all elements of 0.5 * ((mean - target)² / variance + log variance): the
    Gaussian negative log-likelihood without its constant. A 1-D variance is per channel
    (dim 1) and broadcast over the batch and the positions."""
    if predicted_variance.dim() == 1:
        predicted_variance = predicted_variance.view(1, -1, *[1] * (target.dim() - 2))
    squared_error = (predicted_mean - target.detach()).pow(2)
    return (0.5 * (squared_error / predicted_variance + predicted_variance.log())).mean()


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)


class VariationalRegressor(nn.Module):
    """The student map's predicted mean (three 1x1 convs, mid width = the teacher's channels)
    and the per-channel variance softplus(log_scale) + eps, starting at ``init_variance``."""

    def __init__(self, student_channels: int, teacher_channels: int, init_variance: float,
                 eps: float):
        super().__init__()
        self.mean = nn.Sequential(conv1x1(student_channels, teacher_channels), nn.ReLU(),
                                  conv1x1(teacher_channels, teacher_channels), nn.ReLU(),
                                  conv1x1(teacher_channels, teacher_channels))
        # softplus⁻¹(init_variance - eps): the variance starts at init_variance
        start = math.log(math.expm1(init_variance - eps))
        self.log_scale = nn.Parameter(torch.full((teacher_channels,), start))
        self.eps = eps

    def variance(self) -> torch.Tensor:
        return F.softplus(self.log_scale) + self.eps

    def forward(self, student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
        student_map, teacher_map = pool_to_common_size(student_map, teacher_map)
        return vid_loss(self.mean(student_map), self.variance(), teacher_map)


class Term(DistillTerm):
    needs = "features"

    def __init__(self, init_pred_var: float = 5.0, eps: float = 1e-5,
                 layers: dict | None = None):
        super().__init__(layers)
        self.init_pred_var = init_pred_var
        self.eps = eps
        self.regressors = nn.ModuleList()  # one per pair, built in bind(); not exported

    def bind(self, student, teacher, pairs):
        super().bind(student, teacher, pairs)
        check_maps("vid", student, teacher, pairs, self.layers_key)
        self.regressors = nn.ModuleList(
            VariationalRegressor(student.features[s].shape[1], teacher.features[t].shape[1],
                                 self.init_pred_var, self.eps)
            for s, t in pairs)

    def forward(self, student, teachers, inputs: TermInputs):
        teacher = teachers[0]  # feature terms follow the first (primary) teacher
        total = student.logits.new_zeros(())
        for regressor, (s, t) in zip(self.regressors, self.pairs, strict=True):
            total = total + regressor(student.features[s], teacher.features[t])
        return total
