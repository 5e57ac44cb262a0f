"""Unstructured L1-magnitude pruning (torch.nn.utils.prune masks): per layer, or one global
threshold with prune.scope=global."""

from __future__ import annotations

from lepton_exp.config.schemas import PruneConfig as Schema  # noqa: F401 - the entry's schema


def prune(model, layers, cfg, target: float, previous: float, example) -> None:
    from lepton_exp.prune.magnitude import prune_unstructured

    # Masks persist, so pruning to `target` keeps the earlier rounds' zeros.
    prune_unstructured(layers, target, method="magnitude", scope=cfg.prune.scope)
