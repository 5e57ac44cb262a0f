"""Overhaul of Feature Distillation (Heo et al., ICCV 2019), as mdistiller implements it: the
student's pre-ReLU stage maps, through a 1x1 conv + BN connector, regress the teacher's
pre-ReLU maps under a partial L2 distance that leaves the student free wherever the teacher's
response is cut by its ReLU and the student's is too (below the teacher's margin)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lepton_exp.distill.base import DistillTerm, TermInputs
from lepton_exp.distill.layers import check_spatial, connector_for
from lepton_exp.models.taps import feature_entries

# Below this share of negative responses a channel's margin is -3 std (mdistiller's rule).
MIN_NEGATIVE_SHARE = 1e-3


def gaussian_margin(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per channel, E[x | x < 0] for x ~ N(mean, std²): the expected value of a response the
    ReLU cuts; -3 std where fewer than 0.1 % of the responses are negative."""
    mean, std = mean.double(), std.double().abs().clamp_min(1e-12)
    negative_share = torch.special.ndtr(-mean / std)
    density = torch.exp(-((mean / std) ** 2) / 2) / math.sqrt(2 * math.pi)
    margin = torch.where(negative_share > MIN_NEGATIVE_SHARE,
                         mean - std * density / negative_share.clamp_min(MIN_NEGATIVE_SHARE),
                         -3 * std)
    return margin.float()


def ofd_loss(student_preact: torch.Tensor, teacher_preact: torch.Tensor,
             margin: torch.Tensor) -> torch.Tensor:
    """The paper's partial L2 between N x C x H x W maps: the target is the teacher's map
    raised to the (per-channel, non-positive) margin; a position costs (student - target)²
    unless the target is not positive and the student is below it. Summed over channels and
    positions, averaged over the batch."""
    if margin.dim() == 1:
        margin = margin.view(1, -1, 1, 1)
    target = torch.maximum(teacher_preact, margin.to(teacher_preact))
    counted = (student_preact > target) | (target > 0)
    squared = (student_preact - target).pow(2)
    return torch.where(counted, squared, torch.zeros_like(squared)).sum() / student_preact.shape[0]


class Term(DistillTerm):
    needs = "preact"

    def __init__(self, layers: dict | None = None):
        super().__init__(layers)
        self.connectors = nn.ModuleList()  # trained with the student, not exported

    def bind(self, student, teacher, pairs):
        super().bind(student, teacher, pairs)
        connectors = []
        for index, (s, t) in enumerate(pairs):
            check_spatial("ofd", s, t, student.preact[s], teacher.preact[t], self.layers_key)
            connector = connector_for("ofd", s, t, student.preact[s], teacher.preact[t])
            nn.init.kaiming_normal_(connector[0].weight, mode="fan_out", nonlinearity="relu")
            connectors.append(connector)
            # Where the teacher names no BN before its ReLU (timm models), the margin comes
            # from its pre-ReLU responses on the dry-run batch; bind_models replaces it.
            responses = teacher.preact[t].transpose(0, 1).flatten(1).float()
            self.register_buffer(f"margin{index}", gaussian_margin(
                responses.mean(dim=1), responses.std(dim=1, unbiased=False)), persistent=False)
        self.connectors = nn.ModuleList(connectors)

    def bind_models(self, student, teacher):
        entries = feature_entries(teacher)
        for index, (_, t) in enumerate(self.pairs):
            name = entries[t].get("bn_before_relu")
            norm = teacher.get_submodule(name) if name else None
            if getattr(norm, "weight", None) is not None:
                # the BN's scale and shift: the std and mean of the pre-ReLU responses
                estimate = getattr(self, f"margin{index}")
                margin = gaussian_margin(norm.bias.detach(), norm.weight.detach())
                self.register_buffer(f"margin{index}", margin.to(estimate.device),
                                     persistent=False)

    def margins(self) -> list[torch.Tensor]:
        return [getattr(self, f"margin{index}") for index in range(len(self.pairs))]

    def forward(self, student, teachers, inputs: TermInputs):
        teacher = teachers[0]
        total = student.logits.new_zeros(())
        count = len(self.pairs)
        for index, (connector, margin, (s, t)) in enumerate(
                zip(self.connectors, self.margins(), self.pairs, strict=True)):
            regressed = connector(student.preact[s])
            target = F.adaptive_avg_pool2d(teacher.preact[t].detach(), regressed.shape[-2:])
            # deeper stages weigh more: the last 1, each one before it half the next
            total = total + ofd_loss(regressed, target, margin) / 2 ** (count - index - 1)
        return total
