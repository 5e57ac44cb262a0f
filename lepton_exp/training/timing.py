"""Training throughput of a run: time spent in training epochs (data loading included,
validation excluded) and the samples trained in it, and the seconds from the command's start
to its first training step (imports, config, data, models, sanity check), for the run
record (`timing`)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch

from lepton_exp import processes


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
    """Seconds and samples of each training epoch: from its start to its last step, the
    loading of its batches included; validation, which Lightning runs inside the epoch, is
    left out with what follows it (the best checkpoint's save), as is the epoch-end save."""

    def __init__(self):
        self.epoch_seconds: list[float] = []
        self.samples = 0
        self._elapsed = 0.0  # of the current epoch, up to `_started`
        self._started: float | None = None
        self._in_epoch = False
        self.first_step_s: float | None = None
        # whole loop iterations (batch start to the next one's: loading, step, hooks) after
        # the first epoch, whose median a step's cost is read from: robust to a pause
        self.step_seconds: list[float] = []
        self._batch_started: float | None = None

    def _pause(self) -> None:
        if self._started is not None:
            self._elapsed += time.perf_counter() - self._started
            self._started = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._elapsed, self._started, self._in_epoch = 0.0, time.perf_counter(), True
        self._batch_started = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self.first_step_s is None:
            self.first_step_s = time.time() - processes.started_at()
        if self._started is None and self._in_epoch:  # training goes on after a validation
            self._started = now
        elif self._batch_started is not None and self.epoch_seconds:
            self.step_seconds.append(now - self._batch_started)
        self._batch_started = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += batch_size(batch)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._pause()
        self._batch_started = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._pause()
        self._in_epoch = False
        self.epoch_seconds.append(self._elapsed)

    def summary(self) -> dict[str, Any]:
        seconds = sum(self.epoch_seconds)
        return {"train_s": round(seconds, 3), "train_samples": self.samples,
                "train_samples_per_s": round(self.samples / seconds, 2) if seconds else None,
                "epoch_s": [round(s, 3) for s in self.epoch_seconds],
                "step_ms": round(statistics.median(self.step_seconds) * 1000, 3)
                if self.step_seconds else None,
                "first_step_s": round(self.first_step_s, 3) if self.first_step_s else None}
