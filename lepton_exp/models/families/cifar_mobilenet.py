"""MobileNetV2 for 32x32 images as the distillation benchmarks use it: RepDistiller's
``mobile_half`` (the CIFAR MobileNetV2 of "Knowledge Distillation via Route Constrained
Optimization": Sandler et al.'s inverted residuals, width 0.5, expansion 6, a stride-2 stem
and the CIFAR strides). timm's ImageNet MobileNets stay near chance on 32x32 inputs; this one
is the student of CRD's table.
"""

from __future__ import annotations

import torch
from torch import nn

from lepton_exp.models.families._cifar import TEXT, CifarNet, build, init_weights, register

__all__ = ["CifarMobileNetV2", "NAMES", "TEXT", "build", "matches"]

# (expansion, output channels, blocks, first stride) per block group; expansion None = the
# model's (RepDistiller's T).
SETTINGS = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
            (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1))
TAPPED_GROUPS = (1, 2, 4, 6)  # the groups whose outputs RepDistiller returns as features
HEAD_CHANNELS = 1280


def _conv_bn_relu(in_chs: int, out_chs: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    """1x1 expand-BN-ReLU, 3x3 depthwise-BN-ReLU, 1x1 project-BN (linear bottleneck); the
    input is added where the shape allows."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_chs * expansion
        self.use_residual = stride == 1 and in_chs == out_chs
        self.conv = nn.Sequential(
            nn.Conv2d(in_chs, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class CifarMobileNetV2(CifarNet):
    """conv1 (stem), blocks (seven groups of inverted residuals), conv2 (1x1 to 1280), pooled
    linear classifier. The tapped groups end in a linear bottleneck, without a ReLU: their
    pre-activation is the tap itself (no ``preact_module``); ``bn_before_relu`` names their
    last BatchNorm as RepDistiller's get_bn_before_relu does."""

    classifier_name = "classifier"

    def __init__(self, width: float = 0.5, expansion: int = 6, num_classes: int = 10,
                 in_chans: int = 3, drop_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__(num_classes, drop_rate)
        in_chs = int(32 * width)
        self.conv1 = _conv_bn_relu(in_chans, in_chs, 3, 2)
        self.add_tap("conv1.2", in_chs, 2, preact_module="conv1.2")
        groups, reduction = [], 2
        for index, (group_expansion, channels, count, stride) in enumerate(SETTINGS):
            out_chs, reduction = int(channels * width), reduction * stride
            groups.append(nn.Sequential(*(
                InvertedResidual(in_chs if block == 0 else out_chs, out_chs,
                                 stride if block == 0 else 1, group_expansion or expansion)
                for block in range(count))))
            in_chs = out_chs
            if index in TAPPED_GROUPS:
                self.add_tap(f"blocks.{index}", out_chs, reduction,
                             bn_before_relu=f"blocks.{index}.{count - 1}.conv.7")
        self.blocks = nn.Sequential(*groups)
        head_chs = int(HEAD_CHANNELS * width) if width > 1.0 else HEAD_CHANNELS
        self.conv2 = _conv_bn_relu(in_chs, head_chs, 1, 1)
        self.add_head(head_chs, global_pool)
        init_weights(self, linear_std=0.01)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.blocks(self.conv1(x)))


NAMES = register(__name__, {"mobile_half": (CifarMobileNetV2, dict(width=0.5, expansion=6))},
                 out_indices=(0, 1, 2, 3, 4), first_conv="conv1.0", classifier="classifier",
                 flatten_sequential=True)


def matches(cfg) -> bool:
    return cfg.name in NAMES
