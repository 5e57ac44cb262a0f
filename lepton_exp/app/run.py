"""One run of a composed config: a chain of stages (``stage=pipeline``) or one stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lepton_exp.app.pipeline import run_pipeline
from lepton_exp.app.runner import run_stage
from lepton_exp.config.validate import PIPELINE


def run(cfg: DictConfig, run_dir: Path | None = None, overrides: list[str] | None = None,
        **kwargs: Any) -> dict[str, Any]:
    """The run's record (a pipeline's: its steps' records inside)."""
    if cfg.stage == PIPELINE:
        return run_pipeline(cfg, run_dir, overrides)
    return run_stage(cfg, run_dir=run_dir, overrides=overrides, **kwargs)
