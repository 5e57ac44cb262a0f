"""What lepton_exp's CIFAR architectures share. Not a model family (the underscore keeps it out
of the MODELS registry): each family module (``cifar_resnet``, ``cifar_vgg``, ...) defines its
networks, registers them here with timm (:func:`register`) and re-exports the family interface
(``TEXT``, ``build``; its own ``matches``).

Every network is a :class:`CifarNet`: timm's classifier interface over a pooled linear head,
and a ``feature_info`` listing the stem and each stage by module name, whose OUTPUT is that
tap (post-activation: RepDistiller's ``is_feat`` features without the pooled vector). Two
keys beside timm's serve distillation methods (timm's FeatureInfo ignores them):

- ``preact_module``: the module whose INPUT is the tap before its final ReLU (RepDistiller's
  ``preact=True`` features); absent where the tap ends without one (MobileNetV2's linear
  bottlenecks, the WRN stem), where the pre-activation is the tap itself.
- ``bn_before_relu``: the BatchNorm right before that ReLU, as the reference code's
  ``get_bn_before_relu()`` lists it (OFD's margins); absent where it lists none.
"""

from __future__ import annotations

from typing import Any, Optional

import timm
import torch
from timm.models import build_model_with_cfg, register_model
from torch import nn

from lepton_exp.data.sets import cifar10  # the normalisation these models are trained with

__all__ = ["CifarNet", "TEXT", "build", "init_weights", "model_names", "register"]

# name -> (family module, model class, constructor kwargs, timm feature cfg)
_ARCHS: dict[str, tuple[str, type, dict, dict]] = {}
# timm reads the pretrained cfgs of an entrypoint's module from its ``default_cfgs``
default_cfgs: dict[str, dict] = {}


class CifarNet(nn.Module):
    """A CIFAR classifier with timm's interface: ``forward_features`` (subclasses), a global
    pool, dropout and a linear classifier named as in the reference code."""

    classifier_name = "fc"

    def __init__(self, num_classes: int, drop_rate: float):
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.feature_info: list[dict] = []

    def add_tap(self, module: str, num_chs: int, reduction: int,
                preact_module: Optional[str] = None, bn_before_relu: Optional[str] = None) -> None:
        entry = dict(num_chs=num_chs, reduction=reduction, module=module)
        if preact_module:
            entry["preact_module"] = preact_module
        if bn_before_relu:
            entry["bn_before_relu"] = bn_before_relu
        self.feature_info.append(entry)

    def add_head(self, num_features: int, global_pool: str) -> None:
        self.num_features = self.head_hidden_size = num_features
        self.global_pool = nn.AdaptiveAvgPool2d(1) if global_pool else nn.Identity()
        self.reset_classifier(self.num_classes)

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_name)

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        setattr(self, self.classifier_name, head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.global_pool(x), 1)
        if self.drop_rate:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def init_weights(model: nn.Module, linear_std: Optional[float] = None) -> None:
    """The reference code's init: He-normal convolutions (fan-out, zero bias), BatchNorm 1/0
    and, where it sets them, N(0, linear_std) linear weights with zero bias."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and linear_std is not None:
            nn.init.normal_(module.weight, 0.0, linear_std)
            nn.init.zeros_(module.bias)


def _cfg(first_conv: str, classifier: str) -> dict:
    # No published weights: pretrained=True is refused in _create rather than silently
    # falling back to random init (timm's behaviour for a cfg without a url).
    return dict(url="", num_classes=10, input_size=(3, 32, 32), pool_size=None, crop_pct=1.0,
                interpolation="bilinear", mean=cifar10.MEAN, std=cifar10.STD,
                first_conv=first_conv, classifier=classifier)


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    if pretrained:
        raise ValueError(
            f"no pretrained weights are published for CIFAR-style '{variant}': "
            "set model.pretrained=false (or train a teacher first)"
        )
    _, model_cls, arch, feature_cfg = _ARCHS[variant]
    return build_model_with_cfg(model_cls, variant, pretrained=False,
                                feature_cfg=dict(feature_cfg), **arch, **kwargs)


def _make_entrypoint(variant: str, family: str):
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return _create(variant, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = variant
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"CIFAR-style {variant} ({family}, registered by lepton_exp)."
    return entrypoint


def _refuse_clashes(family: str, names: list[str]) -> None:
    taken = [name for name in names if timm.is_model(name) and
             timm.models.model_entrypoint(name).__module__ != __name__]
    if taken:
        raise RuntimeError(
            f"timm already defines {taken}; lepton_exp's CIFAR models would shadow them"
        )
    twice = [name for name in names if name in _ARCHS and _ARCHS[name][0] != family]
    if twice:
        raise RuntimeError(f"{family} registers {twice}, which {_ARCHS[twice[0]][0]} already did")


def register(family: str, archs: dict[str, tuple[type, dict]], *, out_indices: tuple[int, ...],
             first_conv: str = "conv1", classifier: str = "fc",
             flatten_sequential: bool = False) -> tuple[str, ...]:
    """Registers ``archs`` (timm name -> (model class, constructor kwargs)) of the family
    module ``family`` with timm; returns their names. ``out_indices``: every feature tap, what
    ``features_only`` returns by default; ``flatten_sequential``: taps one level inside a
    top-level ``nn.Sequential`` (timm's FeatureListNet finds them only then)."""
    _refuse_clashes(family, list(archs))
    feature_cfg = dict(out_indices=out_indices)
    if flatten_sequential:
        feature_cfg["flatten_sequential"] = True
    for name, (model_cls, arch) in archs.items():
        _ARCHS[name] = (family, model_cls, arch, feature_cfg)
        default_cfgs[name] = _cfg(first_conv, classifier)
        globals()[name] = register_model(_make_entrypoint(name, family))
    return tuple(archs)


def model_names() -> tuple[str, ...]:
    """Every CIFAR architecture's timm name; importing the model families registers them."""
    from lepton_exp.config.registries import MODELS

    for family in MODELS.names():
        MODELS.get(family)
    return tuple(_ARCHS)


# The family interface the family modules re-export: built through timm like any timm model,
# once registered.
TEXT = False


def build(cfg, info, key: str = "model") -> nn.Module:
    from lepton_exp.models.families import timm as timm_family

    return timm_family.build(cfg, info, key)
