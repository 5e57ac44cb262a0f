"""Which weights pruning may touch: conv and linear weights, minus the layers kept dense."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from lepton_exp.errors import ConfigError, did_you_mean
from lepton_exp.measure import PRUNABLE


def first_and_last(model: nn.Module) -> list[str]:
    """Names of the first conv/linear layer and the classifier: kept dense by default (they
    hold few weights and pruning them costs the most accuracy)."""
    names = [name for name, module in model.named_modules() if isinstance(module, PRUNABLE)]
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    last = next((name for name, module in model.named_modules() if module is classifier),
                names[-1] if names else None)
    return [name for name in dict.fromkeys([names[0] if names else None, last]) if name]


def prunable_layers(model: nn.Module,
                    skip: Sequence[str] = ("first", "last")) -> dict[str, nn.Module]:
    """Name -> module of the layers to prune. ``skip`` holds module names, or ``first`` /
    ``last`` for the stem and the classifier."""
    skipped = set(skip) - {"first", "last"}
    names = [name for name, module in model.named_modules() if isinstance(module, PRUNABLE)]
    unknown = sorted(skipped - set(names))
    if unknown:
        raise ConfigError(f"prune.skip names {unknown[0]}, which is not a conv/linear layer of "
                          f"the model{did_you_mean(unknown[0], names)}: use first, last or one "
                          f"of {', '.join(names[:6])}, ...")
    edges = first_and_last(model)
    if "first" in skip and edges:
        skipped.add(edges[0])
    if "last" in skip and edges:
        skipped.add(edges[-1])
    return {name: module for name, module in model.named_modules()
            if isinstance(module, PRUNABLE) and name not in skipped}
