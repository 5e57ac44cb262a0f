"""Gradual magnitude pruning during finetuning (Zhu & Gupta, 2017): every ``frequency``
optimiser steps between ``begin_step`` and ``end_step`` the layers are pruned up to the
cubic schedule's sparsity. Masks persist between updates, so pruned weights stay zero."""

from __future__ import annotations

import pytorch_lightning as pl
from torch import nn

from lepton_exp.prune.magnitude import prune_unstructured
from lepton_exp.prune.schedule import cubic_sparsity
from lepton_exp.training.trainer import training_horizon


class GradualPruning(pl.Callback):
    """``begin_step``/``end_step`` in optimiser steps, or ``horizon=(begin, end)`` as fractions
    of the fit's steps (resolved when the fit starts)."""

    def __init__(self, layers: dict[str, nn.Module], initial: float, final: float,
                 begin_step: int = 0, end_step: int = 1, frequency: int = 10,
                 scope: str = "layer", horizon: tuple[float, float] | None = None):
        self.layers = layers
        self.initial, self.final = initial, final
        self.begin_step, self.end_step = begin_step, max(end_step, begin_step + 1)
        self.frequency = max(1, frequency)
        self.scope = scope
        self.horizon = horizon
        self.current = 0.0  # the sparsity applied last

    @property
    def finished(self) -> bool:
        return self.current >= self.final

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.horizon is None or stage != "fit":
            return
        total, _ = training_horizon(trainer)
        begin, end = self.horizon
        self.begin_step = int(begin * total)
        # The last update happens before the last step, so the final epoch (and its
        # checkpoint) is trained and saved at the final sparsity.
        self.end_step = max(self.begin_step + 1, min(round(end * total), total - 1))

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
