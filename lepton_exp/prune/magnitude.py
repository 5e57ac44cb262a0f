"""Unstructured pruning with torch.nn.utils.prune: L1 magnitude (layer-wise or global) and a
random baseline. Masks stay attached (weight = weight_orig * weight_mask) while finetuning,
so pruned weights cannot come back; ``make_permanent`` folds them in for export."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from lepton_exp.config import ConfigError
from lepton_exp.prune.measure import zero_fraction

METHODS = ("magnitude", "random")
SCOPES = ("layer", "global")


def prune_unstructured(layers: dict[str, nn.Module], sparsity: float, method: str = "magnitude",
                       scope: str = "layer") -> None:
    """Raise the layers' weight sparsity to ``sparsity`` (a fraction). Applied again (gradual
    pruning), torch's PruningContainer prunes only among the weights still alive, so the
    amount is converted to the fraction of those that must go."""
    if method not in METHODS or scope not in SCOPES:
        raise ConfigError(f"unknown unstructured pruning {method}/{scope}: methods "
                          f"{', '.join(METHODS)}, scopes {', '.join(SCOPES)}")
    if not layers:
        raise ConfigError("no layer is left to prune: check prune.skip")
    if scope == "global" and method == "magnitude":
        current = zero_fraction(m.weight for m in layers.values())
        amount = _remaining_fraction(current, sparsity)
        prune.global_unstructured([(m, "weight") for m in layers.values()],
                                  pruning_method=prune.L1Unstructured, amount=amount)
        return
    for module in layers.values():
        amount = _remaining_fraction(zero_fraction([module.weight]), sparsity)
        if method == "magnitude":
            prune.l1_unstructured(module, "weight", amount=amount)
        else:  # random baseline, layer by layer (global random = the same in expectation)
            prune.random_unstructured(module, "weight", amount=amount)


def _remaining_fraction(current: float, target: float) -> float:
    if target <= current:
        return 0.0
    return (target - current) / (1.0 - current)


def make_permanent(model: nn.Module) -> None:
    """Fold every mask into its weight (``prune.remove``): a plain module again."""
    for module in model.modules():
        if prune.is_pruned(module):
            for name in [h._tensor_name for h in module._forward_pre_hooks.values()
                         if isinstance(h, prune.BasePruningMethod)]:
                prune.remove(module, name)


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: buffer for name, buffer in model.named_buffers()
            if name.endswith("_mask")}
