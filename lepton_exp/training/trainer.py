"""Lightning Trainer from config, and the fit -> test(last) -> test(best) sequence."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import pytorch_lightning as pl
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from lepton_exp.errors import ConfigError, one_line
from lepton_exp.tracking.record import write_json_atomic
from lepton_exp.training.progress import ProgressBar
from lepton_exp.training.resume import CheckpointOnStop, ExactResume, raise_stops
from lepton_exp.training.speed import (NoProfiler, ThroughputSettings,
                                       fill_uninitialized_memory, on_cuda, resolve_precision,
                                       skip_inherited_batch_hooks, use_lean_loops)
from lepton_exp.training.timing import TrainTimer

MONITOR = "val/acc"
log = logging.getLogger(__name__)


class _Checkpoint(ModelCheckpoint):
    """ModelCheckpoint with its ``state_key`` kept: Lightning builds the key (a repr of five
    settings, ~3 us) on every hook it calls on the callback, to name a profiler action; the
    key changes only with ``monitor``. ``key_class``: the class name the key starts with
    (checkpoints of earlier runs hold the last checkpoint's state under
    ``ModelCheckpoint``'s). Its batch-end hook, where Lightning's saves every n training
    steps or at a time interval, is left out when it is given neither."""

    def __init__(self, key_class: Optional[str] = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.key_class = key_class or type(self).__qualname__
        if not self._every_n_train_steps and self._train_time_interval is None:
            # saves nothing at a batch's end: Lightning skips a hook that is None
            self.on_train_batch_end = None

    @property
    def state_key(self) -> str:
        kept = self.__dict__.get("_kept_state_key")
        if kept is None or kept[0] != self.monitor:
            key = self.key_class + super().state_key.removeprefix(type(self).__qualname__)
            kept = self._kept_state_key = (self.monitor, key)
        return kept[1]


class _BestCheckpoint(_Checkpoint):
    """The best checkpoint on the module's ``monitor`` (default MONITOR; the data's first
    metric), considered only once ``eligible(trainer)`` holds (gradual pruning: an epoch
    that ended below the final sparsity must not become the result)."""

    def __init__(self, eligible: Callable[[pl.Trainer], bool], **kwargs: Any):
        super().__init__(**kwargs)
        self.eligible = eligible

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # before a resumed fit restores this callback's state, which is keyed by the monitor
        self.monitor = getattr(pl_module, "monitor", MONITOR)
        super().setup(trainer, pl_module, stage)

    # ModelCheckpoint saves from one of these two hooks, depending on the validation interval.
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.eligible(trainer):
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.eligible(trainer):
            super().on_validation_end(trainer, pl_module)


@dataclass
class Checkpoints:
    """Two callbacks: the best epoch on MONITOR, and the latest epoch (overwritten at the end
    of every training epoch, validated or not). Lightning's own ``save_last`` only refreshes
    last.ckpt when a new best is saved, so it would silently equal the best checkpoint."""

    best: ModelCheckpoint
    last: ModelCheckpoint
    resume_from: Optional[Path] = None  # fit continues from this checkpoint (an unfinished run)

    @classmethod
    def create(cls, directory: Path,
               best_eligible: Optional[Callable[[pl.Trainer], bool]] = None) -> "Checkpoints":
        best = _BestCheckpoint(best_eligible or (lambda trainer: True), dirpath=str(directory),
                               filename="best-epoch{epoch:03d}", auto_insert_metric_name=False,
                               monitor=MONITOR, mode="max", save_top_k=1)
        last = _Checkpoint(key_class="ModelCheckpoint", dirpath=str(directory), filename="last",
                           monitor=None,
                               save_top_k=1, enable_version_counter=False,
                               save_on_train_epoch_end=True)
        return cls(best, last)


class Trainer(pl.Trainer):
    """Lightning's Trainer, whose fit, validation and test end in ``errors.Stopped`` when
    Ctrl-C or SIGTERM stops them (``resume.raise_stops``), and whose training loop skips a
    per-step signature check (``speed.TrainingEpochLoop``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        use_lean_loops(self)

    def fit(self, *args: Any, **kwargs: Any) -> None:
        raise_stops(self, lambda: super(Trainer, self).fit(*args, **kwargs))

    def validate(self, *args: Any, **kwargs: Any) -> Any:
        return raise_stops(self, lambda: super(Trainer, self).validate(*args, **kwargs))

    def test(self, *args: Any, **kwargs: Any) -> Any:
        return raise_stops(self, lambda: super(Trainer, self).test(*args, **kwargs))


def build_trainer(cfg, run_dir: Path, loggers: list, callbacks: Sequence[Callback] = (),
                  best_eligible: Optional[Callable[[pl.Trainer], bool]] = None,
                  resume_from: Optional[Path] = None,
                  **overrides: Any) -> tuple[pl.Trainer, Checkpoints]:
    """The configured Trainer (``overrides`` replace ``cfg.trainer`` keys) with the two
    checkpoint callbacks, the progress bar and ``callbacks``; its fit continues from
    ``resume_from`` when given."""
    checkpoints = Checkpoints.create(run_dir / "checkpoints", best_eligible)
    checkpoints.resume_from = resume_from
    callbacks = [checkpoints.best, checkpoints.last, *callbacks, ExactResume(), TrainTimer(),
                 CheckpointOnStop(Path(checkpoints.last.dirpath) / "last.ckpt",
                                  cfg.get("checkpoint_every_minutes"))]
    trainer_kwargs: dict[str, Any] = {
        key: value for key, value in OmegaConf.to_container(cfg.trainer).items()
        if value is not None
    }
    trainer_kwargs.update(overrides)
    # ours, not Lightning's: applied by a callback once the module is on its device
    callbacks.append(ThroughputSettings(trainer_kwargs.pop("channels_last", True),
                                        trainer_kwargs.pop("compile", False)))
    fill_uninitialized_memory(trainer_kwargs.pop("fill_uninitialized_memory", False))
    trainer_kwargs["precision"] = resolve_precision(trainer_kwargs.get("precision", "32-true"),
                                                    trainer_kwargs.get("accelerator", "cpu"))
    if trainer_kwargs.get("enable_progress_bar", True):
        callbacks.append(ProgressBar(leave=True))
    if loggers:
        monitor = LearningRateMonitor(logging_interval="epoch")
        monitor.on_train_batch_start = None  # (its batch hook serves step intervals only)
        callbacks.append(monitor)
    try:
        # The data modules shard their own loaders (lepton_exp.data.base.shard_sampler).
        trainer = Trainer(default_root_dir=str(run_dir), logger=loggers or False,
                          callbacks=callbacks, use_distributed_sampler=False,
                          profiler=NoProfiler(), **trainer_kwargs)
    except (MisconfigurationException, ValueError, TypeError, ImportError) as error:
        raise ConfigError(f"invalid trainer settings: {one_line(error)}") from error
    skip_inherited_batch_hooks(trainer.callbacks)  # (with those the Trainer added itself)
    return trainer, checkpoints


def training_horizon(trainer: pl.Trainer) -> tuple[int, int]:
    """(total optimiser steps, optimiser steps per epoch) of the coming fit: what lr
    schedules, distillation schedules and warm-ups are laid out over."""
    total = max(1, int(trainer.estimated_stepping_batches))  # loads the train loader if needed
    batches = trainer.num_training_batches
    if not math.isfinite(batches):  # an iterable without length: spread over the epochs
        return total, max(1, total // max(1, trainer.max_epochs or 1))
    return total, max(1, math.ceil(batches / trainer.accumulate_grad_batches))


def logged_floats(metrics: dict[str, Any], prefixes: tuple[str, ...]) -> dict[str, float]:
    # train/<name> is logged as train/<name>_epoch (its epoch mean) and train/<name>_step
    # (for the loggers); the record keeps the epoch value under train/<name>.
    return {key.removesuffix("_epoch"): float(value) for key, value in metrics.items()
            if key.startswith(prefixes) and not key.endswith("_step")}


def evaluate(module: pl.LightningModule, datamodule: pl.LightningDataModule, prefix: str,
             trainer_cfg) -> dict[str, float]:
    """Test ``module`` as it is (no fit) and return its metrics as ``<prefix>/*``, on the
    test batches and precision that the run's own tests use (``trainer_cfg``)."""
    trainer = Trainer(accelerator=trainer_cfg.accelerator, devices=_this_device(trainer_cfg),
                      precision=resolve_precision(trainer_cfg.precision,
                                                  trainer_cfg.accelerator),
                      limit_test_batches=trainer_cfg.limit_test_batches, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, use_distributed_sampler=False,
                      profiler=NoProfiler())
    module.test_prefix = prefix
    try:
        trainer.test(module, datamodule=datamodule, verbose=False)
        return logged_floats(trainer.callback_metrics, tested_keys(module))
    finally:
        module.test_prefix = "test"


def tested_keys(module: pl.LightningModule) -> tuple[str, ...]:
    """The key prefixes of the module's test metrics (``test/``; with further test splits
    also ``test_<name>/``), under its current ``test_prefix``."""
    prefixes = getattr(module, "test_prefixes", (module.test_prefix,))
    return tuple(f"{prefix}/" for prefix in prefixes)


def _this_device(trainer_cfg) -> int | list[int]:
    """One device for a side evaluation: in a DDP rank, the rank's own GPU (not GPU 0)."""
    return [int(os.environ.get("LOCAL_RANK", 0))] if on_cuda(trainer_cfg.accelerator) else 1


FIT_METRICS = "fit_metrics.json"  # beside last.ckpt once the fit is complete


def _fit_metrics(trainer: pl.Trainer, checkpoints: Checkpoints, module: pl.LightningModule,
                 datamodule: pl.LightningDataModule) -> dict[str, float]:
    """The fit's train/* and val/*, kept beside the checkpoints: a run stopped after its
    fit (while testing or exporting) has nothing left to fit when continued, and reports
    the metrics the fit logged, as the uninterrupted run does."""
    path = Path(checkpoints.last.dirpath) / FIT_METRICS
    if checkpoints.resume_from is not None and not any(
            key.startswith("val/") for key in trainer.callback_metrics):
        if path.exists():
            return json.loads(path.read_text())
        # (a checkpoint of an older version, without the file): validate the restored last
        # weights for val/*; train/* are not recorded
        trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = logged_floats(trainer.callback_metrics, ("train/", "val/"))
    if trainer.is_global_zero:
        write_json_atomic(path, metrics)
    return metrics


def fit_and_test(trainer: pl.Trainer, checkpoints: Checkpoints, module: pl.LightningModule,
                 datamodule: pl.LightningDataModule) -> dict[str, Any]:
    """Fit, then test the last and the best-validation checkpoints.

    Papers report the best epoch, reproductions usually the last: both are recorded,
    as ``test/*`` (last) and ``test_best/*`` (best on ``val/acc``). The module ends up
    holding the weights of the checkpoint tested last (``weights_from``): the best one when
    validation ran, else the last.
    """
    # weights_only: a checkpoint is read as tensors and plain values, never as code
    trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoints.resume_from,
                weights_only=True)
    metrics = _fit_metrics(trainer, checkpoints, module, datamodule)
    # With monitor=None, "best" is simply the latest save.
    last_path = checkpoints.last.best_model_path or None
    best_path = checkpoints.best.best_model_path or None
    evaluations = [("test", last_path)]
    if best_path:
        evaluations.append(("test_best", best_path))
    else:  # validation never ran (limit_val_batches=0, max_steps inside the first epoch, ...)
        log.warning("no validated checkpoint: test_best/* is not recorded")
    for prefix, path in evaluations:
        module.test_prefix = prefix
        trainer.test(module, datamodule=datamodule, ckpt_path=path, verbose=False,
                     weights_only=True)
        metrics.update(logged_floats(trainer.callback_metrics, tested_keys(module)))
    module.test_prefix = "test"
    if checkpoints.best.best_model_score is not None:  # val/acc_best (STS-B: val/pearson_best)
        metrics[f"{checkpoints.best.monitor}_best"] = float(checkpoints.best.best_model_score)
    metrics["epochs"] = trainer.current_epoch
    metrics["global_step"] = trainer.global_step
    timer = next(c for c in trainer.callbacks if isinstance(c, TrainTimer))
    return {"metrics": metrics, "checkpoints": {"last": last_path, "best": best_path},
            "weights_from": evaluations[-1][1], "timing": timer.summary()}
