"""Unstructured pruning with torch.nn.utils.prune: L1 magnitude (layer-wise or global) and a
random baseline. Masks stay attached (weight = weight_orig * weight_mask) while finetuning,
so pruned weights cannot come back; ``make_permanent`` folds them in for export."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from lepton_exp.errors import ConfigError

METHODS = ("magnitude", "random")
SCOPES = ("layer", "global")


def prune_unstructured(layers: dict[str, nn.Module], sparsity: float, method: str = "magnitude",
                       scope: str = "layer") -> None:
    """Raise the layers' weight sparsity to ``sparsity`` (a fraction). Amounts are given to
    torch as whole numbers of weights: applied again (gradual pruning), torch's
    PruningContainer prunes among the weights still alive, so the count still to prune is
    passed and the result is round(sparsity * n) however many updates led there."""
    if method not in METHODS or scope not in SCOPES:
        raise ConfigError(f"unknown unstructured pruning {method}/{scope}: methods "
                          f"{', '.join(METHODS)}, scopes {', '.join(SCOPES)}")
    if not layers:
        raise ConfigError("no layer is left to prune: check prune.skip")
    if scope == "global" and method == "magnitude":
        total = sum(m.weight.numel() for m in layers.values())
        amount = _still_to_prune(list(layers.values()), round(sparsity * total))
        if amount:
            prune.global_unstructured([(m, "weight") for m in layers.values()],
                                      pruning_method=prune.L1Unstructured, amount=amount)
        return
    for module in layers.values():
        amount = _still_to_prune([module], round(sparsity * module.weight.numel()))
        if not amount:
            continue
        if method == "magnitude":
            prune.l1_unstructured(module, "weight", amount=amount)
        else:  # random baseline, layer by layer (global random = the same in expectation)
            prune.random_unstructured(module, "weight", amount=amount)


def _still_to_prune(modules: list[nn.Module], target: int) -> int:
    """Weights to prune so that ``target`` are masked in total (0 when already reached)."""
    masked = sum(int((m.weight_mask == 0).sum()) for m in modules if hasattr(m, "weight_mask"))
    return max(0, target - masked)


def make_permanent(model: nn.Module) -> None:
    """Fold every mask into its weight (``prune.remove``): a plain module again."""
    for module in model.modules():
        if prune.is_pruned(module):
            for name in [h._tensor_name for h in module._forward_pre_hooks.values()
                         if isinstance(h, prune.BasePruningMethod)]:
                prune.remove(module, name)


def attach_masks(model: nn.Module, state: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Attach the pruning masks found in ``state`` (``<prefix><module>.<w>_mask``) to the
    modules of ``model`` that have none yet, so that ``state`` -- a checkpoint taken while
    masks were attached -- loads strictly into it."""
    modules = dict(model.named_modules())
    for key, mask in state.items():
        if not (key.startswith(prefix) and key.endswith("_mask")):
            continue
        path, _, tensor_name = key.removeprefix(prefix).removesuffix("_mask").rpartition(".")
        module = modules.get(path)
        if module is not None and not hasattr(module, f"{tensor_name}_mask"):
            prune.custom_from_mask(module, tensor_name, mask.to(torch.bool).to(mask.dtype))


def refresh_masked(model: nn.Module) -> None:
    """Recompute every masked tensor (``<w> = <w>_orig * <w>_mask``) from its parts, as a
    forward pass would: after loading the parts, the tensor the next pruning step ranks is
    otherwise the one from before the load."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                hook(module, None)


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: buffer for name, buffer in model.named_buffers()
            if name.endswith("_mask")}
