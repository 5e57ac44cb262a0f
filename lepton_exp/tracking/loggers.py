"""Metric loggers from config: W&B (offline by default), CSV, or none.

W&B must never take a run down: if it cannot start (no API key, no network, a timeout), the
run continues with a CSV logger and says so once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lepton_exp.config import method_label

if TYPE_CHECKING:  # Lightning is imported by the builders: config validation reads LOGGERS
    from pytorch_lightning.loggers import Logger

log = logging.getLogger(__name__)


def _no_logger(cfg, run_dir: Path, flat_config: dict[str, Any]) -> list["Logger"]:
    return []


def _csv_logger(cfg, run_dir: Path, flat_config: dict[str, Any]) -> list["Logger"]:
    from pytorch_lightning.loggers import CSVLogger

    return [CSVLogger(str(run_dir), name="csv", version="")]


def _wandb_or_csv(cfg, run_dir: Path, flat_config: dict[str, Any]) -> list["Logger"]:
    if cfg.logger.mode == "disabled":
        return _csv_logger(cfg, run_dir, flat_config)
    try:
        return [_wandb_logger(cfg, run_dir, flat_config)]
    except Exception as error:  # noqa: BLE001 - any W&B failure must not stop training
        log.warning("W&B could not start (%s: %s); logging to CSV in %s/csv instead",
                    type(error).__name__, str(error).splitlines()[0] if str(error) else "",
                    run_dir)
        return _csv_logger(cfg, run_dir, flat_config)


LOGGERS: dict[str, Callable[..., list["Logger"]]] = {
    "wandb": _wandb_or_csv, "csv": _csv_logger, "none": _no_logger}


def build_loggers(cfg, run_dir: Path, flat_config: dict[str, Any]) -> list["Logger"]:
    return LOGGERS[cfg.logger.name](cfg, run_dir, flat_config)


def _wandb_logger(cfg, run_dir: Path, flat_config: dict[str, Any]) -> "Logger":
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    mode = {"dryrun": "offline", "run": "online"}.get(cfg.logger.mode, cfg.logger.mode)
    if mode == "online" and not (os.environ.get("WANDB_API_KEY") or _has_netrc_key()):
        log.warning("logger.mode=online but no W&B API key is configured: running offline "
                    "(run `wandb login`, or `wandb sync` the run directory later)")
        mode = "offline"
    saved_mode = os.environ.get("WANDB_MODE")
    os.environ.setdefault("WANDB_SILENT", "true")
    logger = WandbLogger(
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


def run_tags(cfg) -> list[str]:
    """The configured tags plus what W&B users filter an ablation by (stage, model, data,
    distillation terms, pruning method)."""
    tags = [f"stage:{cfg.stage}", f"model:{cfg.model.name}", f"data:{cfg.data.name}"]
    if cfg.distill.terms:
        tags.append(f"distill:{method_label(cfg.distill.terms)}")
    if cfg.prune.method != "none":
        tags.append(f"prune:{cfg.prune.method}")
    return [tag[:64] for tag in dict.fromkeys([*cfg.tags, *tags])]  # W&B's limit: 64


def sweep_group() -> str | None:
    """W&B group of the runs of one Hydra sweep: its directory's name (None outside one)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    parts = sweep_dir.parts[-1:] if sweep_dir.parent.name == "multiruns" else sweep_dir.parts[-2:]
    return "/".join(parts)


def _has_netrc_key() -> bool:
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_run_info(loggers: list["Logger"]) -> dict[str, Any] | None:
    """Where the W&B run lives (for the run record and the console)."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            run_dir = Path(run.dir).parent  # .../wandb/offline-run-<date>-<id>
            return {"id": run.id, "project": run.project,
                    "mode": "offline" if run.offline else "online",
                    "dir": str(run_dir), "url": getattr(run, "url", None)}
    return None


def finish_loggers(loggers: list["Logger"], summary: dict[str, Any]) -> None:
    """Push final metrics to the W&B summary and close the run (a sweep opens a new one next)."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            try:
                logger.experiment.summary.update(summary)
                logger.experiment.finish()
            except Exception as error:  # noqa: BLE001 - tracking must not fail a finished run
                log.warning("W&B could not finish cleanly: %s", error)
        else:
            logger.finalize("success")
