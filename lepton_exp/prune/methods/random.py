"""Random unstructured pruning: the baseline any pruning criterion must beat."""

from __future__ import annotations

from lepton_exp.config.schemas import PruneConfig as Schema  # noqa: F401 - the entry's schema


def prune(model, layers, cfg, target: float, previous: float, example) -> None:
    from lepton_exp.prune.magnitude import prune_unstructured

    prune_unstructured(layers, target, method="random", scope=cfg.prune.scope)
