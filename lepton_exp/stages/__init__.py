"""Stages by name (`stage=teacher`); one run is one stage.

Adding a stage: a module with a ``run_<stage>(ctx) -> StageOutput`` and a line here.
"""

from __future__ import annotations

from typing import Callable

from lepton_exp.stages.context import StageContext, StageOutput


def _teacher(ctx: StageContext) -> StageOutput:
    from lepton_exp.stages.teacher import run_teacher

    return run_teacher(ctx)


STAGES: dict[str, Callable[[StageContext], StageOutput]] = {"teacher": _teacher}

__all__ = ["STAGES", "StageContext", "StageOutput"]
