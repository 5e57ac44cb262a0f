"""CIFAR-style ResNets and Wide ResNets used throughout the distillation literature.

These are the 32x32-input networks of He et al. (2016, Sec. 4.2) and Zagoruyko & Komodakis
(2016) in the variants that CRD/RepDistiller/mdistiller benchmark with (resnet8 ... resnet110,
resnet8x4, resnet32x4, wrn_16_2, wrn_40_2), and RepDistiller's ResNet-50 for 32x32 inputs
(``resnet50_cifar``: bottleneck blocks, a 3x3 stride-1 stem, four stages; ``resnet50`` stays
timm's ImageNet model). They are registered with timm, so
``timm.create_model("resnet56", num_classes=100)`` builds them and timm's machinery
(``features_only``, ``pretrained_cfg``, ``reset_classifier``) works as for timm's own models.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from lepton_exp.models.families._cifar import TEXT, CifarNet, build, init_weights, register

__all__ = ["CifarResNet", "CifarBottleneckResNet", "WideResNet", "CIFAR_MODEL_NAMES", "TEXT",
           "build", "matches"]


class BasicBlock(nn.Module):
    final_act, final_bn = "act2", "bn2"  # the block's last ReLU and the BatchNorm before it

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = _projection(in_chs, out_chs, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here), 1x1 expand to ``out_chs`` = 4 x the inner width."""

    final_act, final_bn = "act3", "bn3"

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        width = out_chs // 4
        self.conv1 = nn.Conv2d(in_chs, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = _projection(in_chs, out_chs, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.act3(x + shortcut)


def _projection(in_chs: int, out_chs: int, stride: int) -> nn.Module | None:
    # Projection shortcut (option B) where the shape changes, as in the distillation code bases.
    if stride == 1 and in_chs == out_chs:
        return None
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False),
                         nn.BatchNorm2d(out_chs))


class _StagedNet(CifarNet):
    """What the CIFAR ResNets and WRNs share: a 3x3 stride-1 stem and stages named layer1,
    layer2, ... (one feature tap each)."""

    def _add_stages(self, stem_chs: int, widths: Sequence[int], depths: Sequence[int],
                    strides: Sequence[int],
                    make_block: Callable[[int, int, int], nn.Module]) -> int:
        in_chs, reduction = stem_chs, 1
        self.stage_names = []
        for stage, (width, depth, stride) in enumerate(zip(widths, depths, strides, strict=True),
                                                       start=1):
            blocks = []
            for index in range(depth):
                blocks.append(make_block(in_chs, width, stride if index == 0 else 1))
                in_chs = width
            name, reduction = f"layer{stage}", reduction * stride
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            final_act, final_bn = (getattr(blocks[-1], "final_act", None),
                                   getattr(blocks[-1], "final_bn", None))
            self.add_tap(name, width, reduction,
                         preact_module=final_act and f"{name}.{depth - 1}.{final_act}",
                         bn_before_relu=final_bn and f"{name}.{depth - 1}.{final_bn}")
        return in_chs

    def _stages(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x


class _ResNet(_StagedNet):
    """A ResNet for small images: conv-BN-ReLU stem (3x3, stride 1), then the stages."""

    def _add_stem(self, in_chans: int, width: int) -> None:
        self.conv1 = nn.Conv2d(in_chans, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.add_tap("act1", width, 1, preact_module="act1")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._stages(self.act1(self.bn1(self.conv1(x))))


class CifarResNet(_ResNet):
    """ResNet-(6n+2) for small images: a 3x3 stem and three stages of n basic blocks."""

    def __init__(self, depth: int, widths: Sequence[int] = (16, 16, 32, 64), num_classes: int = 10,
                 in_chans: int = 3, drop_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__(num_classes, drop_rate)
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CifarResNet depth must be 6n+2 (8, 14, 20, ..., 110), got {depth}")
        self._add_stem(in_chans, widths[0])
        blocks = (depth - 2) // 6
        out_chs = self._add_stages(widths[0], widths[1:], (blocks,) * 3, (1, 2, 2), BasicBlock)
        self.add_head(out_chs, global_pool)
        init_weights(self)


class CifarBottleneckResNet(_ResNet):
    """RepDistiller's ResNet-50 for 32x32 images (resnetv2.py): the ImageNet ResNet's four
    bottleneck stages (64..512 wide, x4 out) after a 3x3 stride-1 stem, no max-pool."""

    def __init__(self, depths: Sequence[int] = (3, 4, 6, 3), num_classes: int = 10,
                 in_chans: int = 3, drop_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__(num_classes, drop_rate)
        self._add_stem(in_chans, 64)
        out_chs = self._add_stages(64, (256, 512, 1024, 2048), depths, (1, 2, 2, 2), Bottleneck)
        self.add_head(out_chs, global_pool)
        init_weights(self)


class PreActBlock(nn.Module):
    """Wide-ResNet block: BN-ReLU-conv twice, pre-activation."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Conv2d(in_chs, out_chs, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        # The projection shortcut sees the pre-activated input (Zagoruyko & Komodakis).
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.act2(self.bn2(out))))
        return out + shortcut


class WideResNet(_StagedNet):
    """WRN-depth-k for small images (depth = 6n+4), pre-activation blocks."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 10, in_chans: int = 3,
                 drop_rate: float = 0.0, block_dropout: float = 0.0, global_pool: str = "avg"):
        super().__init__(num_classes, drop_rate)
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 (16, 22, 28, 40), got {depth}")
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        self.add_tap("conv1", 16, 1)
        out_chs = self._add_stages(
            16, widths, ((depth - 4) // 6,) * 3, (1, 2, 2),
            lambda in_chs, out_chs, stride: PreActBlock(in_chs, out_chs, stride, block_dropout))
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)
        # A stage ends on a sum; its first BN-ReLU is the next block's (the last stage's: the
        # final bn1/act1), which RepDistiller's preact features and get_bn_before_relu use.
        for stage, entry in enumerate(self.feature_info[1:], start=1):
            after = f"layer{stage + 1}.0." if stage < 3 else ""
            entry.update(preact_module=f"{after}act1", bn_before_relu=f"{after}bn1")
        self.add_head(out_chs, global_pool)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self._stages(self.conv1(x))))


_ARCHS: dict[str, tuple[type[nn.Module], dict]] = {
    "resnet8": (CifarResNet, dict(depth=8)),
    "resnet14": (CifarResNet, dict(depth=14)),
    "resnet20": (CifarResNet, dict(depth=20)),
    "resnet32": (CifarResNet, dict(depth=32)),
    "resnet44": (CifarResNet, dict(depth=44)),
    "resnet56": (CifarResNet, dict(depth=56)),
    "resnet110": (CifarResNet, dict(depth=110)),
    "resnet8x4": (CifarResNet, dict(depth=8, widths=(32, 64, 128, 256))),
    "resnet32x4": (CifarResNet, dict(depth=32, widths=(32, 64, 128, 256))),
    "wrn_16_1": (WideResNet, dict(depth=16, widen_factor=1)),
    "wrn_16_2": (WideResNet, dict(depth=16, widen_factor=2)),
    "wrn_40_1": (WideResNet, dict(depth=40, widen_factor=1)),
    "wrn_40_2": (WideResNet, dict(depth=40, widen_factor=2)),
}
# The ResNets and WRNs of this module (lepton_exp.models.CIFAR_MODEL_NAMES: every CIFAR model).
CIFAR_MODEL_NAMES = register(__name__, _ARCHS, out_indices=(0, 1, 2, 3)) + register(
    __name__, {"resnet50_cifar": (CifarBottleneckResNet, {})}, out_indices=(0, 1, 2, 3, 4))


def matches(cfg) -> bool:
    return cfg.name in CIFAR_MODEL_NAMES
