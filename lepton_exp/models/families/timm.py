"""Any timm model by name (CIFAR architectures included, once their family registered them):
the fallback family, which also says which names are close when none matches."""

from __future__ import annotations

import difflib

import timm
from torch import nn

from lepton_exp.errors import ConfigError, one_line

TEXT = False


def matches(cfg) -> bool:
    return timm.is_model(cfg.name)


def build(cfg, info, key: str = "model") -> nn.Module:
    if not timm.is_model(cfg.name):
        close = difflib.get_close_matches(cfg.name, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown {key}.name '{cfg.name}'{hint}: use a conf/model option "
                          "or any name from timm.list_models()")
    kwargs = dict(cfg.kwargs or {})
    try:
        return timm.create_model(cfg.name, pretrained=cfg.pretrained,
                                 num_classes=info.num_classes, in_chans=info.in_chans,
                                 drop_rate=cfg.drop_rate, **kwargs)
    except (ValueError, TypeError) as error:  # e.g. a model.kwargs key the model doesn't take
        raise ConfigError(f"cannot build model '{cfg.name}': {one_line(error)}") from error
    except (OSError, RuntimeError) as error:
        if cfg.pretrained:
            raise ConfigError(
                f"could not fetch pretrained weights for '{cfg.name}' ({type(error).__name__}):"
                f" set {key}.pretrained=false, or run once with network access to cache them"
                " (offline, HF_HUB_OFFLINE=1 skips the download retries)"
            ) from error
        raise


def pretrained_classes(cfg) -> int | None:
    """How many classes the pretrained classifier of ``cfg`` has (None: unknown)."""
    overlay = dict((cfg.kwargs or {}).get("pretrained_cfg_overlay") or {})
    if "num_classes" in overlay:
        return int(overlay["num_classes"])
    pretrained = timm.models.get_pretrained_cfg(cfg.name)
    return getattr(pretrained, "num_classes", None)
