"""Lightning Trainer from config, and the fit -> test(last) -> test(best) sequence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from lepton_exp.config import ConfigError

MONITOR = "val/acc"


def build_trainer(cfg, run_dir: Path, loggers: list) -> tuple[pl.Trainer, ModelCheckpoint]:
    checkpoint = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"), filename="best-epoch{epoch:03d}",
        auto_insert_metric_name=False, monitor=MONITOR, mode="max", save_top_k=1,
        save_last=True,
    )
    callbacks: list[Callback] = [checkpoint]
    trainer_kwargs: dict[str, Any] = {
        key: value for key, value in OmegaConf.to_container(cfg.trainer).items()
        if value is not None
    }
    if trainer_kwargs.get("enable_progress_bar", True):
        callbacks.append(_progress_bar())
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    try:
        trainer = pl.Trainer(default_root_dir=str(run_dir), logger=loggers or False,
                             callbacks=callbacks, **trainer_kwargs)
    except (MisconfigurationException, ValueError, TypeError) as error:
        raise ConfigError(f"invalid trainer settings: {_one_line(error)}") from error
    return trainer, checkpoint


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _progress_bar() -> Callback:
    from pytorch_lightning.callbacks import RichProgressBar

    class ProgressBar(RichProgressBar):
        """Rich bar showing the running train loss and val metrics only (no v_num, no twins)."""

        def get_metrics(self, trainer, pl_module):
            items = super().get_metrics(trainer, pl_module)
            items.pop("v_num", None)
            return {key.removesuffix("_step"): value for key, value in items.items()
                    if not key.endswith("_epoch")}

    return ProgressBar(leave=True)


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    # Lightning adds `<key>_step`/`<key>_epoch` twins for metrics logged both ways; the
    # epoch value is already under `<key>`.
    return {key: float(value) for key, value in metrics.items()
            if not key.endswith(("_step", "_epoch"))}


def fit_and_test(trainer: pl.Trainer, checkpoint: ModelCheckpoint, module: pl.LightningModule,
                 datamodule: pl.LightningDataModule) -> dict[str, Any]:
    """Fit, then test the last and the best-validation checkpoints.

    Papers report the best epoch, reproductions usually the last: both are recorded,
    as ``test/*`` (last) and ``test_best/*`` (best on ``val/acc``).
    """
    trainer.fit(module, datamodule=datamodule)
    metrics = _floats({k: v for k, v in trainer.callback_metrics.items()
                       if k.startswith(("train/", "val/"))})
    last_path = checkpoint.last_model_path or None
    best_path = checkpoint.best_model_path or last_path
    module.test_prefix = "test"
    trainer.test(module, datamodule=datamodule, ckpt_path=last_path, verbose=False)
    metrics.update(_floats({k: v for k, v in trainer.callback_metrics.items()
                            if k.startswith("test/")}))
    module.test_prefix = "test_best"
    trainer.test(module, datamodule=datamodule, ckpt_path=best_path, verbose=False)
    metrics.update(_floats({k: v for k, v in trainer.callback_metrics.items()
                            if k.startswith("test_best/")}))
    module.test_prefix = "test"
    if checkpoint.best_model_score is not None:
        metrics["val/acc_best"] = float(checkpoint.best_model_score)
    metrics["epochs"] = trainer.current_epoch
    metrics["global_step"] = trainer.global_step
    return {
        "metrics": metrics,
        "checkpoints": {"last": last_path, "best": best_path},
    }
