"""Gradual magnitude pruning during finetuning (Zhu & Gupta, 2017): every ``frequency``
optimiser steps between ``begin_step`` and ``end_step`` the layers are pruned up to the
cubic schedule's sparsity. Masks persist between updates, so pruned weights stay zero."""

from __future__ import annotations

import pytorch_lightning as pl
from torch import nn

from lepton_exp.prune.magnitude import prune_unstructured, refresh_masked
from lepton_exp.prune.schedule import cubic_sparsity


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
        self.last_step = float("inf")  # the fit's last optimiser step (known at setup)

    @property
    def finished(self) -> bool:
        return self.current >= self.final

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        # optimiser steps of the coming fit (what the lr schedule is laid out over too)
        total = max(1, int(trainer.estimated_stepping_batches))
        # Whatever the schedule, the last training step starts at the final sparsity, so the
        # final epoch (its validation and its checkpoint) is at the final sparsity.
        self.last_step = total - 1
        if self.horizon is not None:
            begin, end = self.horizon
            self.begin_step = min(int(begin * total), max(0, total - 2))
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

    # Saved in checkpoints: a resumed fit continues from the sparsity reached (the masks
    # themselves are in the model's state).
    def state_dict(self) -> dict[str, float]:
        return {"current": self.current}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.current = state_dict["current"]

    def on_train_start(self, trainer, pl_module) -> None:
        # a resumed fit loaded the masked weights' parts: rank what they make, not stale ones
        refresh_masked(pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        self.update(self.end_step if step >= self.last_step else step)

    def on_train_end(self, trainer, pl_module) -> None:
        self.update(self.end_step)  # a run shorter than the schedule still ends at `final`
