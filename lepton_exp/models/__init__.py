"""Models by name through timm; importing this registers the CIFAR-style ResNets with timm."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
from torch import nn

from lepton_exp.config import ConfigError, one_line
from lepton_exp.data.base import DataInfo
from lepton_exp.models import cifar_resnet  # noqa: F401 - registers resnet8 ... wrn_40_2

CIFAR_MODEL_NAMES = cifar_resnet.CIFAR_MODEL_NAMES


def build_model(cfg, info: DataInfo, key: str = "model") -> nn.Module:
    """A classifier for `info`'s classes and channels, built by timm from `cfg.name` (or by
    transformers for text models, models/text.py); `key` is where `cfg` sits in the config
    (for errors: model, teacher.model)."""
    from lepton_exp.models.text import BERT_SIZES, build_text_model, is_text_model

    if is_text_model(cfg) != info.is_text:
        kind = "text" if info.is_text else "images"
        choices = ", ".join(BERT_SIZES) + " or a pretrained_path" if info.is_text else (
            "a CNN such as resnet8")
        raise ConfigError(f"{key}.name={cfg.name} does not fit the data ({kind}): use "
                          f"{choices} for {key}")
    if info.is_text:
        return build_text_model(cfg, info, key)
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


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """The model's state dict as safetensors, written atomically (temp file + rename)."""
    from safetensors.torch import save_file

    state = {name: tensor.detach().cpu().contiguous() for name, tensor in
             model.state_dict().items()}
    partial = path.with_name(f".{path.name}.partial")
    save_file(state, str(partial), metadata=metadata)
    partial.replace(path)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers as stored in memory (dense)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


__all__ = ["CIFAR_MODEL_NAMES", "build_model", "count_parameters", "model_size_bytes",
           "save_weights"]
