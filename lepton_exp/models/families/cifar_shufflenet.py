"""ShuffleNet V1 and V2 for 32x32 images as the distillation benchmarks use them:
RepDistiller's ``ShuffleV1`` (Zhang et al. 2018, 3 groups, stages 240/480/960 wide) and
``ShuffleV2`` (Ma et al. 2018, 1x: 116/232/464, a 1024-wide head), both with a 1x1 stride-1
stem (24 channels) and no max-pool. Registered as ``shufflev1`` / ``shufflev2``.

Neither reference declares ``get_bn_before_relu`` (a stage ends on a sum or a concatenation,
not on one BatchNorm), so their taps carry no ``bn_before_relu``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from lepton_exp.models.families._cifar import TEXT, CifarNet, build, register

__all__ = ["CifarShuffleNetV1", "CifarShuffleNetV2", "NAMES", "TEXT", "build", "matches"]

STEM_CHANNELS = 24


class ChannelShuffle(nn.Module):
    """Interleaves the channels of ``groups`` groups: (g, C/g) -> (C/g, g)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        x = x.reshape(batch, self.groups, channels // self.groups, height, width)
        return x.transpose(1, 2).reshape(batch, channels, height, width)


def _conv_bn(in_chs: int, out_chs: int, kernel: int = 1, stride: int = 1,
             groups: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return (nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_chs))


class ShuffleV1Unit(nn.Module):
    """Grouped 1x1 (a quarter of the output width), shuffle, depthwise 3x3, grouped 1x1. At
    stride 2 the 3x3-average-pooled input is concatenated (``out_chs`` then counts only the
    new channels), else added; ``act3`` (after either) is the unit's last ReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, groups: int, first_groups: int):
        super().__init__()
        mid_chs = out_chs // 4
        self.conv1, self.bn1 = _conv_bn(in_chs, mid_chs, groups=first_groups)
        self.act1 = nn.ReLU()
        self.shuffle1 = ChannelShuffle(first_groups)
        self.conv2, self.bn2 = _conv_bn(mid_chs, mid_chs, 3, stride, groups=mid_chs)
        self.act2 = nn.ReLU()
        self.conv3, self.bn3 = _conv_bn(mid_chs, out_chs, groups=groups)
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else None
        self.act3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle1(self.act1(self.bn1(self.conv1(x))))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + x if self.shortcut is None else torch.cat([out, self.shortcut(x)], 1)
        return self.act3(out)


class _ShuffleNet(CifarNet):
    """conv1-bn1-act1 (1x1 stem), layer1..3 (stride 2 each), then ``_add_head``."""

    classifier_name = "linear"

    def _add_stem(self, in_chans: int) -> None:
        self.conv1, self.bn1 = _conv_bn(in_chans, STEM_CHANNELS)
        self.act1 = nn.ReLU()
        self.add_tap("act1", STEM_CHANNELS, 1, preact_module="act1")

    def _add_stage(self, stage: int, units: list[nn.Module], width: int, preact: str) -> None:
        self.add_module(f"layer{stage}", nn.Sequential(*units))
        self.add_tap(f"layer{stage}", width, 2 ** stage,
                     preact_module=f"layer{stage}.{len(units) - 1}.{preact}")

    def _stem_and_stages(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))


class CifarShuffleNetV1(_ShuffleNet):
    def __init__(self, widths: Sequence[int] = (240, 480, 960), depths: Sequence[int] = (4, 8, 4),
                 groups: int = 3, num_classes: int = 10, in_chans: int = 3,
                 drop_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__(num_classes, drop_rate)
        self._add_stem(in_chans)
        in_chs = STEM_CHANNELS
        for stage, (width, depth) in enumerate(zip(widths, depths, strict=True), start=1):
            units = []
            for index in range(depth):
                # The first unit's first 1x1 is not grouped: the 24 stem channels are few.
                first_groups = 1 if stage == 1 and index == 0 else groups
                new_chs = width - in_chs if index == 0 else width
                units.append(ShuffleV1Unit(in_chs, new_chs, 2 if index == 0 else 1, groups,
                                           first_groups))
                in_chs = width
            self._add_stage(stage, units, width, "act3")
        self.add_head(in_chs, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._stem_and_stages(x)


class ShuffleV2Unit(nn.Module):
    """Half the channels pass; the other half go 1x1-BN-ReLU, depthwise 3x3-BN, 1x1-BN; both
    are concatenated, ReLU'd (``act3``) and shuffled. RepDistiller ReLUs only the branch, but
    the passed half is >= 0 already (every unit ends in ReLUs, so does the down-sampling
    unit), so ``act3``'s input is its pre-activation (concatenated, unshuffled) and its output
    the same as the reference's."""

    def __init__(self, channels: int):
        super().__init__()
        self.half = channels // 2
        self.conv1, self.bn1 = _conv_bn(self.half, self.half)
        self.act1 = nn.ReLU()
        self.conv2, self.bn2 = _conv_bn(self.half, self.half, 3, groups=self.half)
        self.conv3, self.bn3 = _conv_bn(self.half, self.half)
        self.act3 = nn.ReLU()
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        passed, branch = x[:, :self.half], x[:, self.half:]
        branch = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(branch)))))
        branch = self.bn3(self.conv3(branch))
        return self.shuffle(self.act3(torch.cat([passed, branch], 1)))


class ShuffleV2DownUnit(nn.Module):
    """Stride 2, both halves computed: depthwise 3x3-BN, 1x1-BN-ReLU on one; 1x1-BN-ReLU,
    depthwise 3x3-BN, 1x1-BN-ReLU on the other; concatenated and shuffled."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        mid_chs = out_chs // 2
        self.conv1, self.bn1 = _conv_bn(in_chs, in_chs, 3, 2, groups=in_chs)
        self.conv2, self.bn2 = _conv_bn(in_chs, mid_chs)
        self.act2 = nn.ReLU()
        self.conv3, self.bn3 = _conv_bn(in_chs, mid_chs)
        self.act3 = nn.ReLU()
        self.conv4, self.bn4 = _conv_bn(mid_chs, mid_chs, 3, 2, groups=mid_chs)
        self.conv5, self.bn5 = _conv_bn(mid_chs, mid_chs)
        self.act5 = nn.ReLU()
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.act2(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.act3(self.bn3(self.conv3(x)))
        right = self.act5(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return self.shuffle(torch.cat([left, right], 1))


class CifarShuffleNetV2(_ShuffleNet):
    def __init__(self, widths: Sequence[int] = (116, 232, 464), depths: Sequence[int] = (3, 7, 3),
                 head_chs: int = 1024, num_classes: int = 10, in_chans: int = 3,
                 drop_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__(num_classes, drop_rate)
        self._add_stem(in_chans)
        in_chs = STEM_CHANNELS
        for stage, (width, depth) in enumerate(zip(widths, depths, strict=True), start=1):
            units = [ShuffleV2DownUnit(in_chs, width)] + [ShuffleV2Unit(width)
                                                          for _ in range(depth)]
            self._add_stage(stage, units, width, "act3")
            in_chs = width
        self.conv2, self.bn2 = _conv_bn(in_chs, head_chs)
        self.act2 = nn.ReLU()
        self.add_head(head_chs, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.bn2(self.conv2(self._stem_and_stages(x))))


# The reference leaves PyTorch's default init (no init_weights).
NAMES = register(__name__, {"shufflev1": (CifarShuffleNetV1, {}),
                            "shufflev2": (CifarShuffleNetV2, {})},
                 out_indices=(0, 1, 2, 3), classifier="linear")


def matches(cfg) -> bool:
    return cfg.name in NAMES
