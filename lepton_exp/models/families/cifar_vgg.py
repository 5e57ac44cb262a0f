"""VGG for 32x32 images as the distillation benchmarks use it: CRD's vgg8 and vgg13 are
RepDistiller's ``vgg8_bn`` / ``vgg13_bn`` (Simonyan & Zisserman's configurations "S" and "B"
with BatchNorm): five conv blocks, max-pooling after the first three, global average pooling
and one linear classifier (no fully connected stack). ``vgg13`` is timm's ImageNet VGG, so the
CIFAR one registers as ``vgg13_cifar``; ``vgg8`` keeps its name.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from lepton_exp.models.families._cifar import TEXT, CifarNet, build, init_weights, register

__all__ = ["CifarVGG", "NAMES", "TEXT", "build", "matches"]

# Conv widths per block (RepDistiller's cfg "S" and "B").
VGG8_WIDTHS = ((64,), (128,), (256,), (512,), (512,))
VGG13_WIDTHS = ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512))
# Max-pooling after blocks 0-2; the reference pools after block 3 too, for 64x64 inputs only.
POOLED_BLOCKS = 3


def _conv_block(in_chs: int, widths: Sequence[int]) -> nn.Sequential:
    """conv3x3-BN-ReLU per width, without the last ReLU (the stage's, outside the block)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_chs, width, 3, padding=1), nn.BatchNorm2d(width),
                   nn.ReLU(inplace=True)]
        in_chs = width
    return nn.Sequential(*layers[:-1])


class CifarVGG(CifarNet):
    """blockN (convs ending in BN), actN (its ReLU: the tap, and its input the pre-activation),
    poolN; the modules run in the order they are registered (timm's FeatureListNet relies on
    it)."""

    classifier_name = "classifier"

    def __init__(self, widths: Sequence[Sequence[int]], num_classes: int = 10, in_chans: int = 3,
                 drop_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__(num_classes, drop_rate)
        self.body: list[str] = []
        in_chs, reduction = in_chans, 1
        for index, block_widths in enumerate(widths):
            block = _conv_block(in_chs, block_widths)
            self._add(f"block{index}", block)
            self._add(f"act{index}", nn.ReLU())
            self.add_tap(f"act{index}", block_widths[-1], reduction, preact_module=f"act{index}",
                         bn_before_relu=f"block{index}.{len(block) - 1}" if index else None)
            if index < POOLED_BLOCKS:
                self._add(f"pool{index}", nn.MaxPool2d(2, 2))
                reduction *= 2
            in_chs = block_widths[-1]
        self.add_head(in_chs, global_pool)
        init_weights(self, linear_std=0.01)

    def _add(self, name: str, module: nn.Module) -> None:
        self.add_module(name, module)
        self.body.append(name)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.body:
            x = getattr(self, name)(x)
        return x


NAMES = register(__name__, {"vgg8": (CifarVGG, dict(widths=VGG8_WIDTHS)),
                            "vgg13_cifar": (CifarVGG, dict(widths=VGG13_WIDTHS))},
                 out_indices=(0, 1, 2, 3, 4), first_conv="block0.0", classifier="classifier")


def matches(cfg) -> bool:
    return cfg.name in NAMES
