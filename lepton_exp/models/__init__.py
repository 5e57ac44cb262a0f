"""Models by name: ``build_model`` finds the family whose ``matches`` the model config
(``lepton_exp/models/families``: the CIFAR architectures registered with timm, any timm
model, BERT from transformers), adapted to the data's classes and channels (or vocabulary)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from lepton_exp.config.checkpoints import ARCHITECTURE
from lepton_exp.config.registries import MODELS
from lepton_exp.data.base import DataInfo
from lepton_exp.errors import ConfigError
from lepton_exp.models.families._cifar import model_names

CIFAR_MODEL_NAMES = model_names()  # every CIFAR architecture, registered with timm on import

FALLBACK = "timm"  # builds any timm name, or says which names are close


def build_model(cfg, info: DataInfo, key: str = "model") -> nn.Module:
    """A classifier for `info`'s classes and channels (text: vocabulary), built by the
    family that matches `cfg`; `key` is where `cfg` sits in the config (for errors: model,
    teacher.model)."""
    families = [MODELS.get(name) for name in MODELS.names()]  # importing registers with timm
    family = _family(cfg, families)
    if family.TEXT != info.is_text:
        kind = "text" if info.is_text else "images"
        text_names = [n for f in families if f.TEXT for n in getattr(f, "NAMES", ())]
        choices = ", ".join(text_names) + " or a pretrained_path" if info.is_text else (
            "a CNN such as resnet8")
        raise ConfigError(f"{key}.name={cfg.name} does not fit the data ({kind}): use "
                          f"{choices} for {key}")
    return family.build(cfg, info, key)


def _family(cfg, families: list | None = None):
    """The family that builds ``cfg``: the first that matches it, else timm's."""
    families = families if families is not None else [MODELS.get(n) for n in MODELS.names()]
    return next((f for f in families if f.matches(cfg)), MODELS.get(FALLBACK))


def check_pretrained_head(cfg, info: DataInfo, key: str) -> None:
    """A pretrained model used as it is (no training) must bring a classifier for the data's
    classes: a missing or resized head would start from random weights, silently."""
    classes = getattr(_family(cfg), "pretrained_classes", lambda cfg: None)(cfg)
    if classes != info.num_classes:
        what = ("no classification head" if classes == 0 else
                f"a classifier of {classes} classes" if classes else "an unknown classifier")
        raise ConfigError(f"{key} ({cfg.name}) is used as it is (max_epochs=0), but its "
                          f"pretrained weights have {what} and the data has "
                          f"{info.num_classes}: train it (max_epochs >= 1), or use data with "
                          "the classes it was trained on")


def data_metadata(description: dict[str, Any]) -> dict[str, str]:
    """A data module's ``input_description()`` as safetensors metadata (strings: each value
    JSON-encoded, ``json.loads`` reads it back; unknown values left out): the weights then
    say how to prepare inputs (mean, std, size, channel order) and what output i means."""
    import json

    return {key: json.dumps(value) for key, value in description.items() if value is not None}


def check_class_names(path: Path, info: DataInfo, key: str) -> None:
    """A model exported with class names (``data_metadata``) outputs them in that order: data
    whose classes are named otherwise, or ordered otherwise, would be read wrongly."""
    if path.suffix != ".safetensors" or not path.is_file() or not info.class_names:
        return
    import json

    from lepton_exp.data.labels import shown

    try:
        stored = read_metadata(path).get("class_names")
    except Exception:  # noqa: BLE001 - unreadable: the weights' loader reports it
        return
    if stored is not None and tuple(json.loads(stored)) != info.class_names:
        raise ConfigError(f"{key}={path} outputs the classes {shown(json.loads(stored))}, "
                          f"but the data's are {shown(info.class_names)}: use the data it "
                          "was trained on (a table: data.class_names in its order)")


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file (what :func:`save_weights` stored beside it)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """The model's state dict as safetensors, written atomically (temp file + rename). The
    metadata also names the architecture (timm's name), so a loader that is given another one
    can say which it is."""
    from safetensors.torch import save_file

    from lepton_exp.tracking.record import publish

    state = {name: tensor.detach().cpu().contiguous() for name, tensor in
             model.state_dict().items()}
    architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    if architecture:
        metadata = {ARCHITECTURE: str(architecture), **(metadata or {})}
    partial = path.with_name(f".{path.name}.partial")
    save_file(state, str(partial), metadata=metadata)
    publish(partial, path)


__all__ = ["CIFAR_MODEL_NAMES", "build_model", "check_class_names", "check_pretrained_head",
           "data_metadata", "read_metadata", "save_weights"]
