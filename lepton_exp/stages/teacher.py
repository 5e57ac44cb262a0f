"""Teacher stage: supervised training of a classifier on the configured data.

The trained model (best validation epoch) also goes into the teacher cache, so distillation
runs asking for this teacher (same data, model, optimisation, seed) reuse it.
"""

from __future__ import annotations

from lepton_exp.models import build_model
from lepton_exp.stages import artifacts
from lepton_exp.stages.classify import ClassificationModule
from lepton_exp.stages.context import StageContext, StageOutput
from lepton_exp.training.trainer import build_trainer, fit_and_test


def run_teacher(ctx: StageContext) -> StageOutput:
    cfg = ctx.cfg
    model = build_model(cfg.model, ctx.datamodule.info)
    module = ClassificationModule(model, ctx.datamodule.info, cfg.optim, cfg.scheduler)
    trainer, checkpoints = build_trainer(cfg, ctx.run_dir, ctx.loggers,
                                         resume_from=ctx.resume_from)
    result = fit_and_test(trainer, checkpoints, module, ctx.datamodule)
    extra = {"timing": result["timing"]}
    if trainer.is_global_zero:
        entry = artifacts.publish(cfg, model, result["metrics"], result["weights_from"],
                                 ctx.run_dir)
        extra["teacher_cache"] = {"key": entry.name, "path": str(entry)}
    return StageOutput(model=model, metrics=result["metrics"],
                       checkpoints=result["checkpoints"], extra=extra)
