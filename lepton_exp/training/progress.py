"""The run's progress bar: Lightning's rich bar, cheaper (see ``ProgressBar``)."""

from __future__ import annotations

import time

from pytorch_lightning.callbacks import RichProgressBar
from rich.progress import Progress


class ProgressBar(RichProgressBar):
    """Rich bar showing the epoch's running train loss and the val metrics (no v_num, no
    twins), updated at most every ``REDRAW_S`` seconds and drawn by rich's thread twice a
    second: Lightning's bar reads the metrics (a device sync) at every batch and wakes
    its drawing thread 100 times a second, a millisecond a step on a small model."""

    REDRAW_S = 0.25

    def __init__(self, **kwargs):
        # refresh_rate: the drawing thread's wake-ups a second
        super().__init__(refresh_rate=2, **kwargs)
        self._drawn_at = 0.0

    def _due(self, batch_idx: int, total) -> bool:
        now = time.monotonic()
        if now - self._drawn_at < self.REDRAW_S and batch_idx + 1 != total:
            return False
        self._drawn_at = now
        return True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._due(batch_idx, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx=0):
        if self._due(batch_idx, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx,
                                            dataloader_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                          dataloader_idx=0):
        if self._due(batch_idx, self.total_test_batches_current_dataloader):
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx,
                                      dataloader_idx)

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        shown = {key: value for key, value in items.items()
                 if not key.endswith(("_step", "_epoch"))}
        means = getattr(pl_module, "train_means", None)
        if trainer.training and means is not None:
            shown.update({f"train/{name}": float(value)
                          for name, value in means.means().items()})
        return shown

    def _stop_progress(self) -> None:
        # rich's own stop, without Lightning's join of its refresh thread: that thread
        # sleeps a whole refresh period (0.5 s) before it sees the stop, and the bar is
        # stopped at every epoch start (leave=True) and teardown. The thread ends on its
        # own at its next wake-up (it checks the stop flag before drawing).
        if self.progress is not None:
            Progress.stop(self.progress)
            self._progress_stopped = True

    @property
    def test_description(self) -> str:
        prefix = getattr(self.trainer.lightning_module, "test_prefix", "test")
        return "Testing best checkpoint" if prefix == "test_best" else "Testing last checkpoint"
