"""Gradual magnitude pruning during finetuning (Zhu & Gupta, 2017): every ``frequency``
optimiser steps between ``begin_step`` and ``end_step`` the layers are pruned up to the
cubic schedule's sparsity. Masks persist between updates, so pruned weights stay zero."""

from __future__ import annotations

import pytorch_lightning as pl
from torch import nn

from lepton_exp.prune.magnitude import prune_unstructured
from lepton_exp.prune.schedule import cubic_sparsity


class GradualPruning(pl.Callback):
    def __init__(self, layers: dict[str, nn.Module], initial: float, final: float,
                 begin_step: int, end_step: int, frequency: int = 10, scope: str = "layer"):
        self.layers = layers
        self.initial, self.final = initial, final
        self.begin_step, self.end_step = begin_step, max(end_step, begin_step + 1)
        self.frequency = max(1, frequency)
        self.scope = scope
        self.current = 0.0  # the sparsity applied last

    def target(self, step: int) -> float:
        return cubic_sparsity(step, self.initial, self.final, self.begin_step, self.end_step)

    def update(self, step: int) -> None:
        """Prune to the schedule's value at ``step`` when an update is due."""
        due = step >= self.end_step or (step >= self.begin_step
                                        and (step - self.begin_step) % self.frequency == 0)
        target = self.target(step)
        if due and target > self.current:
            prune_unstructured(self.layers, target, scope=self.scope)
            self.current = target

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.update(trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        self.update(self.end_step)  # a run shorter than the schedule still ends at `final`
