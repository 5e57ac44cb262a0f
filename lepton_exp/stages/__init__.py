"""Stages by name (`stage=teacher`); one run is one stage.

Adding a stage: a module with ``run_<stage>(ctx) -> StageOutput`` (and optionally a
``prepare_<stage>(cfg, datamodule)`` that runs before the run's loggers start, e.g. to train
a missing teacher in its own run) and an entry here. Imports are lazy so the stage names
can be listed without torch (config validation).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

from lepton_exp.stages.context import StageContext, StageOutput


@dataclass(frozen=True)
class Stage:
    module: str
    has_prepare: bool = False

    def _function(self, prefix: str) -> Callable:
        name = self.module.rsplit(".", 1)[1]
        return getattr(importlib.import_module(self.module), f"{prefix}_{name}")

    def prepare(self, cfg, datamodule) -> Optional[Any]:
        return self._function("prepare")(cfg, datamodule) if self.has_prepare else None

    def run(self, ctx: StageContext) -> StageOutput:
        return self._function("run")(ctx)


STAGES: dict[str, Stage] = {
    "teacher": Stage("lepton_exp.stages.teacher"),
    "distill": Stage("lepton_exp.stages.distill", has_prepare=True),
    "prune": Stage("lepton_exp.stages.prune", has_prepare=True),
    # A chain of the stages above, each its own run (conf/experiment/quickstart.yaml).
    "pipeline": Stage("lepton_exp.stages.pipeline"),
}

__all__ = ["STAGES", "Stage", "StageContext", "StageOutput"]
