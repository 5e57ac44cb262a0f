"""CIFAR-style ResNets and Wide ResNets used throughout the distillation literature.

These are the 32x32-input networks of He et al. (2016, Sec. 4.2) and Zagoruyko & Komodakis
(2016) in the variants that CRD/RepDistiller/mdistiller benchmark with (resnet8 ... resnet110,
resnet8x4, resnet32x4, wrn_16_2, wrn_40_2). They are registered with timm, so
``timm.create_model("resnet56", num_classes=100)`` builds them and timm's machinery
(``features_only``, ``pretrained_cfg``, ``reset_classifier``) works as for timm's own models.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import timm
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from lepton_exp.data.sets import cifar10  # the normalisation these models are trained with

__all__ = ["CifarResNet", "WideResNet", "CIFAR_MODEL_NAMES"]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_chs != out_chs:
            # Projection shortcut (option B), as in the distillation code bases.
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.act2(x + shortcut)


class _ThreeStageNet(nn.Module):
    """What the CIFAR ResNets and WRNs share: a 3x3 stem, three stages (strides 1, 2, 2)
    named layer1..3 with timm ``feature_info``, and a pooled linear classifier."""

    def __init__(self, num_classes: int, drop_rate: float):
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate

    def _add_stages(self, stem_chs: int, stem_module: str, widths: Sequence[int], blocks: int,
                    make_block: Callable[[int, int, int], nn.Module]) -> int:
        self.feature_info = [dict(num_chs=stem_chs, reduction=1, module=stem_module)]
        in_chs = stem_chs
        for stage, (width, stride) in enumerate(zip(widths, (1, 2, 2), strict=True), start=1):
            layers = []
            for index in range(blocks):
                layers.append(make_block(in_chs, width, stride if index == 0 else 1))
                in_chs = width
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
            self.feature_info.append(
                dict(num_chs=width, reduction=2 ** (stage - 1), module=f"layer{stage}"))
        return in_chs

    def _add_head(self, num_features: int, global_pool: str) -> None:
        self.num_features = self.head_hidden_size = num_features
        self.global_pool = nn.AdaptiveAvgPool2d(1) if global_pool else nn.Identity()
        self.reset_classifier(self.num_classes)
        _init_weights(self)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.global_pool(x), 1)
        if self.drop_rate:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class CifarResNet(_ThreeStageNet):
    """ResNet-(6n+2) for small images: a 3x3 stem and three stages of n basic blocks."""

    def __init__(self, depth: int, widths: Sequence[int] = (16, 16, 32, 64), num_classes: int = 10,
                 in_chans: int = 3, drop_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__(num_classes, drop_rate)
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CifarResNet depth must be 6n+2 (8, 14, 20, ..., 110), got {depth}")
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        out_chs = self._add_stages(widths[0], "act1", widths[1:], (depth - 2) // 6, BasicBlock)
        self._add_head(out_chs, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))


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


class WideResNet(_ThreeStageNet):
    """WRN-depth-k for small images (depth = 6n+4), pre-activation blocks."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 10, in_chans: int = 3,
                 drop_rate: float = 0.0, block_dropout: float = 0.0, global_pool: str = "avg"):
        super().__init__(num_classes, drop_rate)
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 (16, 22, 28, 40), got {depth}")
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        out_chs = self._add_stages(
            16, "conv1", widths, (depth - 4) // 6,
            lambda in_chs, out_chs, stride: PreActBlock(in_chs, out_chs, stride, block_dropout))
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)
        self._add_head(out_chs, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.act1(self.bn1(x))


def _init_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _cfg(**kwargs: Any) -> dict:
    # No published weights: pretrained=True is refused in _create rather than silently
    # falling back to random init (timm's behaviour for a cfg without a url).
    return dict(
        url="", num_classes=10, input_size=(3, 32, 32), pool_size=None, crop_pct=1.0,
        interpolation="bilinear", mean=cifar10.MEAN, std=cifar10.STD,
        first_conv="conv1", classifier="fc", **kwargs,
    )


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
CIFAR_MODEL_NAMES = tuple(_ARCHS)

default_cfgs = generate_default_cfgs({name: _cfg() for name in _ARCHS})


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    if pretrained:
        raise ValueError(
            f"no pretrained weights are published for CIFAR-style '{variant}': "
            "set model.pretrained=false (or train a teacher first)"
        )
    model_cls, arch = _ARCHS[variant]
    return build_model_with_cfg(
        model_cls, variant, pretrained=False,
        feature_cfg=dict(out_indices=(0, 1, 2, 3)),
        **arch, **kwargs,
    )


def _make_entrypoint(variant: str):
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return _create(variant, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = variant
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"CIFAR-style {variant} (registered by lepton_exp)."
    return entrypoint


def _register_all() -> None:
    taken = [name for name in _ARCHS if name in timm.list_models() and
             timm.models.get_model_entrypoint(name).__module__ != __name__]
    if taken:
        raise RuntimeError(
            f"timm already defines {taken}; lepton_exp's CIFAR models would shadow them"
        )
    for name in _ARCHS:
        globals()[name] = register_model(_make_entrypoint(name))


_register_all()


# The family's entry interface (lepton_exp.models.families): built through timm like any
# timm model, once registered above.
TEXT = False


def matches(cfg) -> bool:
    return cfg.name in CIFAR_MODEL_NAMES


def build(cfg, info, key: str = "model") -> nn.Module:
    from lepton_exp.models.families import timm as timm_family

    return timm_family.build(cfg, info, key)
