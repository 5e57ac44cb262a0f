"""Metric loggers from config, one module per logger: the file name is ``logger.name``
(``wandb``: W&B, offline by default; ``csv``; ``none``). Each entry defines
``build(cfg, run_dir, flat_config, resume_id=None) -> list[Logger]``; adding a logger is its
module here plus its yaml in ``conf/logger/``.

W&B must never take a run down: if it cannot start, the run continues with a CSV logger; if it
fails during the run, ``SafeWandbLogger`` continues to CSV in ``<run_dir>/csv`` (see
``_safe_wandb``). This package imports neither Lightning nor wandb until a logger is built.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lepton_exp.config.naming import method_label
from lepton_exp.config.registries import LOGGERS, NONE
from lepton_exp.tracking.loggers._safe_wandb import _describe, _SafeWandb

if TYPE_CHECKING:
    from pytorch_lightning.loggers import Logger

log = logging.getLogger(__name__)


def build_loggers(cfg, run_dir: Path, flat_config: dict[str, Any],
                  resume_id: str | None = None) -> list["Logger"]:
    """The run's loggers. ``resume_id``: the W&B run id of an earlier attempt of this run
    (from its record): the W&B run continues under that id (``resume="allow"``, offline too)."""
    return LOGGERS.get(cfg.logger.name).build(cfg, run_dir, flat_config, resume_id=resume_id)


def __getattr__(name: str) -> Any:
    if name == "SafeWandbLogger":  # the class is built on first use (it imports Lightning)
        from lepton_exp.tracking.loggers import _safe_wandb

        return _safe_wandb.SafeWandbLogger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_tags(cfg) -> list[str]:
    """The configured tags plus what W&B users filter an ablation by (stage, model, data,
    distillation terms, pruning method)."""
    tags = [f"stage:{cfg.stage}", f"model:{cfg.model.name}", f"data:{cfg.data.name}"]
    if cfg.distill.terms:
        tags.append(f"distill:{method_label(cfg.distill.terms)}")
    if cfg.prune.method != NONE:
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


def wandb_run_info(loggers: list["Logger"]) -> dict[str, Any] | None:
    """Where the W&B run lives (for the run record and the console); after a failure during
    the run also what failed and where the metrics went instead."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            try:
                run = logger.experiment
                run_dir = Path(run.dir).parent  # .../wandb/offline-run-<date>-<id>
                info = {"id": run.id, "project": run.project,
                        "mode": "offline" if run.offline else "online",
                        "dir": str(run_dir), "url": getattr(run, "url", None)}
            except Exception as error:  # noqa: BLE001 - the record must still be written
                log.warning("W&B run details unavailable: %s", _describe(error))
                return None
            if isinstance(logger, _SafeWandb) and logger.failure is not None:
                info.update(failed=logger.failure,
                            fallback=str(Path(logger._fallback_dir) / "csv"))
            return info
    return None


def finish_loggers(loggers: list["Logger"], summary: dict[str, Any]) -> None:
    """Push final metrics to the W&B summary and close the run (a sweep opens a new one next).
    A W&B logger that failed during the run only closes its CSV fallback."""
    for logger in loggers:
        if isinstance(logger, _SafeWandb):
            logger._finish_run(summary)
        else:
            logger.finalize("success")


def close_failed_loggers(loggers: list["Logger"]) -> None:
    """After a failed run: finish W&B runs with exit code 1 (not one whose W&B already failed:
    it only closes its CSV fallback). Never raises: the run's own error is what matters."""
    for logger in loggers:
        if isinstance(logger, _SafeWandb):  # (the only loggers here with a run to finish)
            try:
                logger._close_failed()
            except Exception:  # noqa: BLE001 - e.g. the CSV fallback on a full disk
                pass
