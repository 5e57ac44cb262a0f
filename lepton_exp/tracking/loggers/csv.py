"""``logger=csv``: metrics to ``<run_dir>/csv/metrics.csv`` only (also where W&B falls back to)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Lightning is imported when the logger is built, not with this module
    from pytorch_lightning.loggers import Logger


def build(cfg, run_dir: Path, flat_config: dict[str, Any],
          resume_id: str | None = None) -> list["Logger"]:
    return [csv_in(run_dir)]


def csv_in(run_dir: Path) -> "Logger":
    """The CSV logger of a run: ``<run_dir>/csv/metrics.csv``."""
    from pytorch_lightning.loggers import CSVLogger

    return CSVLogger(str(run_dir), name="csv", version="")
