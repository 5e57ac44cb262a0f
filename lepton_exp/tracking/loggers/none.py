"""``logger=none``: no metric logger (the run record, ``summary.json``, is still written)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytorch_lightning.loggers import Logger


def build(cfg, run_dir: Path, flat_config: dict[str, Any],
          resume_id: str | None = None) -> list["Logger"]:
    return []
