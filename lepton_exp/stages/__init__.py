"""Stages by name (``stage=teacher``): one run is one stage.

Each module here is one stage (an entry of ``lepton_exp.config.registries.STAGES``) that
defines ``STAGE``, an instance of a :class:`Stage` subclass. Adding a stage is that module
(plus its presets in ``conf/experiment/``); the runner (``lepton_exp.app.runner``) does the
rest: data, loggers, the run record, resume, quantization, export, the report. Stage modules
import torch and friends inside their methods, so listing and checking stages stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

from lepton_exp.training.context import StageContext, StageOutput, TrainRun


class Stage:
    """What the runner asks of a stage."""

    prunes = False  # runs the configured prune method (other stages refuse one)

    def check(self, cfg) -> Iterable[Optional[str]]:
        """Problems with ``cfg`` for this stage, one line each (run by config validation)."""
        return ()

    def run_name(self, model: str, data: str, method: str, prune: str, sparsity: Any) -> str:
        """The default run name (``method``: the distillation terms, ``none`` without)."""
        return f"{type(self).__module__.rsplit('.', 1)[-1]}-{model}-{data}"

    def prepare(self, cfg, datamodule, train: TrainRun, run_dir: Optional[Path] = None) -> Any:
        """Before the run's loggers start: what the run needs from other runs (teachers, a
        dense model, an initialisation phase in ``run_dir``), trained by ``train`` in runs
        of their own when missing."""
        return None

    def run(self, ctx: StageContext) -> StageOutput:
        raise NotImplementedError

    def resume_point(self, cfg, run_dir: Path) -> Optional[Path]:
        """What an unfinished attempt in ``run_dir`` continues from (its last checkpoint);
        None: nothing to continue, the run starts over."""
        last = run_dir / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None

    # In a pipeline (lepton_exp.app.pipeline), each step is a stage's run.
    exports_model = True  # a later step may name this step's model (`key=step:<name>`)

    def step_config(self, cfg):
        """The config this stage runs as a pipeline step."""
        return cfg

    def run_step(self, cfg, run_dir, overrides: list[str], run: TrainRun) -> dict[str, Any]:
        """The step's record: by default the stage run in ``run_dir``."""
        return run(cfg, run_dir=run_dir, overrides=overrides)

    def table_row(self, cfg) -> dict[str, Any]:
        """This stage's own columns in the pipeline table (beyond model, metrics, sizes)."""
        return {}


__all__ = ["Stage", "StageContext", "StageOutput", "TrainRun"]
