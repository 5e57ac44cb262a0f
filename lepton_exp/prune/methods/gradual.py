"""Gradual magnitude pruning while finetuning (Zhu & Gupta, 2017): the cubic schedule from
``initial_sparsity`` to ``sparsity`` between ``begin`` and ``end`` (fractions of the
finetuning steps), one update every ``frequency`` optimiser steps."""

from __future__ import annotations

from dataclasses import dataclass

from lepton_exp.config.checks import check_range
from lepton_exp.config.schemas import PruneConfig


@dataclass
class Schema(PruneConfig):
    initial_sparsity: float = 0.0  # sparsity at `begin`
    begin: float = 0.0  # start/end of the cubic ramp, as fractions of finetuning
    end: float = 0.5
    frequency: int = 10  # optimiser steps between two pruning updates


def check(cfg):
    prune = cfg.prune
    if prune.rounds != 1:
        yield "prune=gradual is already iterative: leave prune.rounds=1"
    yield from (
        check_range("prune.initial_sparsity", prune.initial_sparsity, 0, prune.sparsity,
                    high_open=False),
        check_range("prune.begin", prune.begin, 0, 1),
        check_range("prune.end", prune.end, prune.begin, 1, low_open=True, high_open=False),
        check_range("prune.frequency", prune.frequency, 1),
    )


def callbacks(layers, cfg):
    """The GradualPruning callback (after pruning to ``initial_sparsity`` right away), and
    checkpoints eligible as the best only once the final sparsity is reached."""
    from lepton_exp.prune.gradual import GradualPruning
    from lepton_exp.prune.magnitude import prune_unstructured

    prune = cfg.prune
    gradual = GradualPruning(layers, prune.initial_sparsity, prune.sparsity,
                             frequency=prune.frequency, scope=prune.scope,
                             horizon=(prune.begin, prune.end))
    if prune.initial_sparsity > 0:
        prune_unstructured(layers, prune.initial_sparsity, scope=prune.scope)
        gradual.current = prune.initial_sparsity
    return [gradual], (lambda trainer: gradual.finished)
