"""Knowledge Review (Chen et al., CVPR 2021), as mdistiller implements it: attention-based
fusion (ABF) modules rebuild each teacher stage map from the student's map at that stage
fused with everything deeper (the pooled embedding first), and the hierarchical context
loss (HCL) compares them with the teacher's pre-ReLU maps at several pooled sizes."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lepton_exp.distill.base import DistillTerm, TermInputs
from lepton_exp.distill.layers import check_spatial
from lepton_exp.errors import ConfigError

HCL_LEVELS = (4, 2, 1)  # pooled sizes (side length) beside the full map
MAX_MID_CHANNELS = 512  # mdistiller: min(512, the student embedding's width)


def hcl_loss(student_features: Sequence[torch.Tensor],
             teacher_features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Summed over pairs of N x C x H x W maps: the MSE of the maps and of their 4x4, 2x2 and
    1x1 average pools (the sizes smaller than H), weighted 1, 1/2, 1/4, ... in that order and
    divided by the sum of the weights used."""
    total = student_features[0].new_zeros(())
    for student, teacher in zip(student_features, teacher_features, strict=True):
        loss, weight, weights = F.mse_loss(student, teacher), 1.0, 1.0
        for size in HCL_LEVELS:
            if size >= student.shape[2]:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(student, size),
                                              F.adaptive_avg_pool2d(teacher, size))
            weights += weight
        total = total + loss / weights
    return total


class AttentionFusion(nn.Module):
    """ABF: a 1x1 conv + BN to ``mid_channels``, a per-position weighted sum with the deeper
    levels' fused map (weights from a 1x1 conv + sigmoid; absent at the deepest level), then a
    3x3 conv + BN to the teacher's channels at the teacher's size."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False),
                                    nn.BatchNorm2d(mid_channels))
        self.project = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels))
        self.attention = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1),
                                       nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.reduce[0].weight, a=1)
        nn.init.kaiming_uniform_(self.project[0].weight, a=1)

    def forward(self, feature: torch.Tensor, deeper: Optional[torch.Tensor],
                out_size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The rebuilt teacher map, and the fused map the next (shallower) level reads."""
        fused = self.reduce(feature)
        if self.attention is not None:
            deeper = F.interpolate(deeper, fused.shape[-2:], mode="nearest")
            weights = self.attention(torch.cat([fused, deeper], dim=1))
            fused = fused * weights[:, :1] + deeper * weights[:, 1:]
        if tuple(fused.shape[-2:]) != tuple(out_size):
            fused = F.interpolate(fused, tuple(out_size), mode="nearest")
        return self.project(fused), fused


def _as_map(embedding: torch.Tensor) -> torch.Tensor:
    return embedding[:, :, None, None]


class Term(DistillTerm):
    needs = "preact"
    also_needs = ("embedding",)

    def __init__(self, student_preact: bool = False, mid_channels: Optional[int] = None,
                 layers: dict | None = None):
        super().__init__(layers)
        self.student_preact = student_preact  # mdistiller's STU_PREACT
        self.mid_channels = mid_channels
        self.fusions = nn.ModuleList()  # deepest level first; trained with the student

    def student_levels(self, student) -> list[torch.Tensor]:
        maps = student.preact if self.student_preact else student.features
        return [maps[s] for s, _ in self.pairs] + [_as_map(student.embedding)]

    def teacher_levels(self, teacher) -> list[torch.Tensor]:
        return [teacher.preact[t] for _, t in self.pairs] + [_as_map(teacher.embedding)]

    def bind(self, student, teacher, pairs):
        super().bind(student, teacher, pairs)
        if student.embedding is None or teacher.embedding is None:
            raise ConfigError("distill term reviewkd reads the models' embeddings (the "
                              "classifier's input), which these models do not expose")
        for s, t in pairs:
            check_spatial("reviewkd", s, t, student.features[s], teacher.preact[t],
                          self.layers_key)
        inputs, targets = self.student_levels(student), self.teacher_levels(teacher)
        mid = self.mid_channels or min(MAX_MID_CHANNELS, inputs[-1].shape[1])
        self.fusions = nn.ModuleList(
            AttentionFusion(feature.shape[1], mid, target.shape[1], fuse=level > 0)
            for level, (feature, target) in enumerate(zip(inputs[::-1], targets[::-1])))

    def forward(self, student, teachers, inputs: TermInputs):
        targets = [target.detach() for target in self.teacher_levels(teachers[0])]
        rebuilt, deeper = [], None
        for fusion, feature, target in zip(self.fusions, self.student_levels(student)[::-1],
                                           targets[::-1], strict=True):
            out, deeper = fusion(feature, deeper, target.shape[-2:])
            rebuilt.insert(0, out)
        return hcl_loss(rebuilt, targets)
