"""Teacher stage: supervised training of a classifier on the configured data."""

from __future__ import annotations

from lepton_exp.models import build_model
from lepton_exp.stages.classify import ClassificationModule
from lepton_exp.stages.context import StageContext, StageOutput
from lepton_exp.training.trainer import build_trainer, fit_and_test


def run_teacher(ctx: StageContext) -> StageOutput:
    cfg = ctx.cfg
    model = build_model(cfg.model, ctx.datamodule.info)
    module = ClassificationModule(model, ctx.datamodule.info, cfg.optim, cfg.scheduler)
    trainer, checkpoints = build_trainer(cfg, ctx.run_dir, ctx.loggers)
    result = fit_and_test(trainer, checkpoints, module, ctx.datamodule)
    return StageOutput(model=model, metrics=result["metrics"], checkpoints=result["checkpoints"])
