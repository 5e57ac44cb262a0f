"""What makes a fit resumable exactly: RNG states and the position in the epoch travel in the
checkpoint, a checkpoint is written every few minutes and when the run is told to stop.

Lightning restores weights, optimiser, lr schedulers, loop counters and ``global_step`` (so
every schedule driven by the step: temperature, alpha, warm-ups). It does not restore the
global random generators, nor where in an epoch a non-stateful loader was: those are here.
The data side (a sampler that skips the batches already trained, augmentations seeded per
sample) is in ``lepton_exp.data.base``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import _collect_rng_states, _set_rng_states
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerStatus
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lepton_exp import processes
from lepton_exp.errors import Stopped

log = logging.getLogger(__name__)
RNG_KEY = "lepton_rng_states"
T = TypeVar("T")


def rng_states() -> dict[str, Any]:
    """The global RNG states, as tensors and plain Python values (``weights_only`` loads them:
    numpy's state is otherwise an ndarray, which a safe unpickler refuses)."""
    states = _collect_rng_states(include_cuda=torch.cuda.is_available())
    kind, keys, position, has_gauss, gauss = states["numpy"]
    states["numpy"] = [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(position),
                       int(has_gauss), float(gauss)]
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    states = dict(states)
    kind, keys, position, has_gauss, gauss = states["numpy"]
    states["numpy"] = (kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss)
    if not torch.cuda.is_available():
        states.pop("torch.cuda", None)
    _set_rng_states(states)


def batches_done_in_epoch(checkpoint: dict[str, Any]) -> int:
    """Training batches of the unfinished epoch a checkpoint was taken in (0: at an epoch end)."""
    fit = checkpoint.get("loops", {}).get("fit_loop", {})
    epochs = fit.get("epoch_progress", {}).get("current", {})
    if epochs.get("started", 0) <= epochs.get("processed", 0):
        return 0  # saved at an epoch end: the next epoch starts from its first batch
    return int(fit.get("epoch_loop.batch_progress", {}).get("current", {}).get("processed", 0))


class ExactResume(Callback):
    """Saves the RNG states with every checkpoint; on resume, has the training loader skip
    the batches already trained in the interrupted epoch and puts the RNG states back just
    before the next training step (after the sanity check and the loader's prefetch). (What
    the interrupted epoch summed for train/* travels with the module: classify.TRAIN_EPOCH_KEY.)"""

    def __init__(self) -> None:
        self._rng: Optional[dict[str, Any]] = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = rng_states()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self._rng = checkpoint.get(RNG_KEY)
        skip = batches_done_in_epoch(checkpoint)
        datamodule = trainer.datamodule
        if skip and hasattr(datamodule, "resume_within_epoch"):
            datamodule.resume_within_epoch(skip, checkpoint.get("epoch"))
            # Lightning warns that a loader without its state_dict interface cannot resume
            # mid-epoch; this one does (the skip above, seeded augmentation), as tested
            warnings.filterwarnings("ignore", message=".*your dataloader is not resumable")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if self._rng is not None:
            set_rng_states(self._rng)
            self._rng = None


class CheckpointOnStop(Callback):
    """Writes ``path`` (the run's last.ckpt) every ``every_minutes`` of training and when the
    fit is stopped by SIGTERM (cluster pre-emption, ``scancel``) or Ctrl-C, so a re-run
    continues from there (``resume``). A stop signal that arrives during a training step
    waits for the step's end (``processes.defer_stops``): the checkpoint then holds whole
    steps only, and the resumed run computes what the uninterrupted one does."""

    def __init__(self, path: Path, every_minutes: Optional[float] = None) -> None:
        self.path = Path(path)
        self.every_seconds = every_minutes * 60 if every_minutes else None
        self._last_save = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_save = time.monotonic()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        processes.defer_stops(True)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        processes.defer_stops(False)
        if processes.stop_requested() is not None:  # the step is whole: stop here
            raise Stopped(processes.stop_requested())
        # (Lightning's own ModelCheckpoint saves from this hook too: it resumes after the batch)
        if self.every_seconds and time.monotonic() - self._last_save >= self.every_seconds:
            trainer.save_checkpoint(self.path)
            self._last_save = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_save = time.monotonic()  # the epoch-end checkpoint is written now

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        processes.defer_stops(False)
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return  # a failure: the last good checkpoint stays as it is
        if not trainer.training or trainer.sanity_checking or getattr(
                exception, "mid_step", False):
            return  # validating, testing, or inside a step: the last checkpoint is whole
        trainer.save_checkpoint(self.path)
        source = exception.source if isinstance(exception, Stopped) else (
            "SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl-C")
        # the log file's line (app.logs: file_only); the console gets the CLI's one line
        log.info("stopped by %s: checkpoint saved to %s; run the same command again to "
                 "continue", source, self.path, extra={"file_only": True})


def raise_stops(trainer: pl.Trainer, call: Callable[[], T]) -> T:
    """``call()`` (a fit, validation or test of ``trainer``), where a stop ends in ``Stopped``:
    Lightning turns Ctrl-C into ``sys.exit(1)`` once it has stopped (exit code 1, and its
    handler ignores further Ctrl-C), which would hide from the CLI that the run was stopped."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        return call()
    except SystemExit:
        if trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
        raise Stopped(processes.stop_requested() or signal.SIGINT) from None
    except SIGTERMException:  # Lightning's own SIGTERM stop (no handler of ours installed)
        raise Stopped(signal.SIGTERM) from None
    finally:
        if signal.getsignal(signal.SIGINT) is not handler and (
                threading.current_thread() is threading.main_thread()):
            signal.signal(signal.SIGINT, handler)
