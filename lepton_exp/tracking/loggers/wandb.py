"""``logger=wandb``: Weights & Biases (offline by default).

W&B must never take a run down: if it cannot start (no API key, no network, a timeout), the
run continues with a CSV logger and says so once; failures during the run are handled by
``SafeWandbLogger`` (see ``_safe_wandb``). Lightning and wandb are imported when the logger is
built, not with this module.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lepton_exp.tracking.loggers import csv, run_tags
from lepton_exp.tracking.loggers._safe_wandb import (
    _describe,
    _has_netrc_key,
    safe_wandb_logger_class,
)

if TYPE_CHECKING:
    from pytorch_lightning.loggers import Logger

log = logging.getLogger(__name__)


def build(cfg, run_dir: Path, flat_config: dict[str, Any],
          resume_id: str | None = None) -> list["Logger"]:
    if cfg.logger.mode == "disabled":
        return csv.build(cfg, run_dir, flat_config)
    try:
        return [_wandb_logger(cfg, run_dir, flat_config, resume_id=resume_id)]
    except Exception as error:  # noqa: BLE001 - any W&B failure must not stop training
        log.warning("W&B could not start (%s); logging to CSV in %s/csv instead",
                    _describe(error), run_dir)
        return csv.build(cfg, run_dir, flat_config)


def _wandb_logger(cfg, run_dir: Path, flat_config: dict[str, Any],
                  resume_id: str | None = None) -> "Logger":
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    mode = {"dryrun": "offline", "run": "online"}.get(cfg.logger.mode, cfg.logger.mode)
    if mode == "online" and not (os.environ.get("WANDB_API_KEY") or _has_netrc_key()):
        log.warning("logger.mode=online but no W&B API key is configured: running offline "
                    "(run `wandb login`, or `wandb sync` the run directory later)")
        mode = "offline"
    saved_mode = os.environ.get("WANDB_MODE")
    os.environ.setdefault("WANDB_SILENT", "true")
    logger = safe_wandb_logger_class(WandbLogger)(
        fallback_dir=run_dir,
        id=resume_id,
        resume="allow",  # a new id starts a new run; an earlier attempt's id continues it
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=cfg.logger.group,
        job_type=cfg.logger.job_type or cfg.stage,
        tags=run_tags(cfg),
        name=cfg.name,
        save_dir=str(run_dir),
        offline=mode == "offline",
        log_model=cfg.logger.log_model,
        config=flat_config,
        settings=wandb.Settings(init_timeout=cfg.logger.init_timeout, mode=mode,
                                console="off", x_disable_stats=True),
    )
    # Lightning passes anonymous=None, which current wandb warns about on every run.
    getattr(logger, "_wandb_init", {}).pop("anonymous", None)
    try:
        _ = logger.experiment  # start the run now: failures surface here, not mid-training
    finally:
        # WandbLogger(offline=True) sets WANDB_MODE=dryrun process-wide; the next run in this
        # process (a sweep, a test) must see the user's own setting again.
        if saved_mode is None:
            os.environ.pop("WANDB_MODE", None)
        else:
            os.environ["WANDB_MODE"] = saved_mode
    return logger
