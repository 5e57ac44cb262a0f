"""Training throughput of a run: time spent in training epochs (data loading included,
validation excluded) and the samples trained in it, for the run record (`timing`)."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn


def batch_size(batch: Any) -> int:
    """Samples in a batch of any layout lepton-exp feeds (tensors, tuples, dicts)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    values = batch.values() if isinstance(batch, dict) else batch
    for value in values if isinstance(values, (list, tuple)) else list(values):
        size = batch_size(value)
        if size:
            return size
    return 0


class TrainTimer(pl.Callback):
    """Seconds and samples of each training epoch; validation, which Lightning runs inside
    the epoch, is left out."""

    def __init__(self):
        self.epoch_seconds: list[float] = []
        self.samples = 0
        self._elapsed = 0.0  # of the current epoch, up to `_started`
        self._started: float | None = None

    def _pause(self) -> None:
        if self._started is not None:
            self._elapsed += time.perf_counter() - self._started
            self._started = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._elapsed, self._started = 0.0, time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += batch_size(batch)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._pause()

    def on_validation_end(self, trainer, pl_module) -> None:
        # validation inside a training epoch (not the sanity check, not trainer.validate)
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._pause()
        self.epoch_seconds.append(self._elapsed)

    def summary(self) -> dict[str, Any]:
        seconds = sum(self.epoch_seconds)
        return {"train_s": round(seconds, 3), "train_samples": self.samples,
                "train_samples_per_s": round(self.samples / seconds, 2) if seconds else None,
                "epoch_s": [round(s, 3) for s in self.epoch_seconds]}
