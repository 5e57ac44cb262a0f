"""Pruned models as safetensors that rebuild without the pruning code.

A channel-pruned model no longer fits its architecture's ``state_dict`` (Torch-Pruning
#139). The file stores the weights plus, in the safetensors metadata, what rebuilds the
shapes: the timm model name and its constructor arguments, and each convolution's
``groups`` (depthwise convolutions shrink their groups with their channels). Loading builds
the architecture, resizes every conv / linear / norm layer to the stored tensor shapes and
loads the weights strictly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lepton_exp.models import read_metadata, save_weights
from lepton_exp.prune.magnitude import attach_masks, make_permanent, refresh_masked

FORMAT = "lepton-exp/pruned-model/1"


def pruned_metadata(model: nn.Module, model_name: str, **create_kwargs: Any) -> dict[str, str]:
    """What rebuilds ``model``'s shapes: the timm name and its constructor arguments (or,
    for a transformers model, its config), and the ``groups`` of every grouped convolution."""
    groups = {name: module.groups for name, module in model.named_modules()
              if isinstance(module, nn.Conv2d) and module.groups != 1}
    metadata = {"format": FORMAT, "model": model_name, "builder": "timm",
                "groups": json.dumps(groups)}
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json_string"):  # transformers
        metadata["builder"] = "transformers"
        metadata["config"] = config.to_json_string()
        create_kwargs = {"num_classes": config.num_labels, "in_chans": 0}
    metadata["create_kwargs"] = json.dumps(create_kwargs)
    return metadata


def save_pruned(model: nn.Module, path: Path, model_name: str, **create_kwargs: Any) -> None:
    """Masks made permanent, then weights + rebuild recipe written (atomically) to ``path``."""
    make_permanent(model)
    save_weights(model, path, pruned_metadata(model, model_name, **create_kwargs))


def pruned_recipe(path: Path) -> dict[str, Any] | None:
    """The rebuild recipe (model name, constructor arguments) of a file written by
    :func:`save_pruned`; None for any other file."""
    if Path(path).suffix != ".safetensors" or not Path(path).is_file():
        return None
    try:
        metadata = read_metadata(path)
    except Exception:  # noqa: BLE001 - unreadable: the regular loader reports it
        return None
    if metadata.get("format") != FORMAT:
        return None
    return {"model": metadata["model"], **json.loads(metadata["create_kwargs"])}


def load_pruned(path: Path) -> nn.Module:
    """Rebuild a model saved by :func:`save_pruned` (timm or transformers, no pruning
    library), in eval mode."""
    from safetensors.torch import load_file

    metadata = read_metadata(path)
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a pruned model saved by lepton-exp")
    state = load_file(str(path))
    if metadata.get("builder") == "transformers":
        from transformers import AutoConfig, AutoModelForSequenceClassification

        config = json.loads(metadata["config"])
        config = AutoConfig.for_model(config.pop("model_type"), **config)
        model = AutoModelForSequenceClassification.from_config(
            config, attn_implementation="eager")
    else:
        import timm

        import lepton_exp.models  # noqa: F401 - registers the CIFAR ResNets with timm

        model = timm.create_model(metadata["model"], **json.loads(metadata["create_kwargs"]))
    _shape_and_load(model, state, metadata)
    return model.eval()


def load_pruned_into(model: nn.Module, path: Path) -> None:
    """Give ``model`` (the architecture the file was pruned from) the shapes, masks and
    weights saved in ``path`` by :func:`save_snapshot`, in place."""
    from safetensors.torch import load_file

    _shape_and_load(model, load_file(str(path)), read_metadata(path))


def save_snapshot(model: nn.Module, path: Path, model_name: str) -> None:
    """``model`` as it is (masks still attached) with its rebuild recipe: what a later
    attempt restores with :func:`load_pruned_into` to continue from this point."""
    save_weights(model, path, pruned_metadata(model, model_name))


def _shape_and_load(model: nn.Module, state: dict[str, torch.Tensor],
                    metadata: dict[str, str]) -> None:
    """Resize ``model``'s layers to ``state``'s tensors, attach its masks, load it strictly."""
    groups = json.loads(metadata["groups"])
    for name, module in model.named_modules():
        _resize(module, name, state, groups)
    if metadata.get("builder") == "transformers":
        from lepton_exp.prune.heads import sync_head_counts

        sync_head_counts(model)
    attach_masks(model, state)
    model.load_state_dict(state, strict=True)
    refresh_masked(model)


def _resize(module: nn.Module, name: str, state: dict[str, torch.Tensor],
            groups: dict[str, int]) -> None:
    prefix = f"{name}." if name else ""
    weight = state.get(f"{prefix}weight")
    if weight is None:
        return
    if isinstance(module, nn.Conv2d):
        module.groups = groups.get(name, 1)
        module.out_channels, module.in_channels = weight.shape[0], weight.shape[1] * module.groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = weight.shape
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        module.num_features = weight.shape[0]
    elif isinstance(module, nn.LayerNorm):
        module.normalized_shape = tuple(weight.shape)
    else:
        return
    for key, _ in list(module.named_parameters(recurse=False)):
        setattr(module, key, nn.Parameter(torch.empty_like(state[f"{prefix}{key}"])))
    for key, tensor in list(module.named_buffers(recurse=False)):
        if tensor is not None and f"{prefix}{key}" in state:
            module.register_buffer(key, torch.empty_like(state[f"{prefix}{key}"]))
