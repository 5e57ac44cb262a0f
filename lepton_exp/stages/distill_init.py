"""Initialisation phase of the distillation methods that have one (AB, FSP, FT): a run of its
own, started by the distillation run in ``<its run dir>/init`` (or as a pipeline step); the
training itself is lepton_exp.training.init_phase."""

from __future__ import annotations

from typing import Any, Iterable, Optional

from lepton_exp.stages import Stage, StageContext, StageOutput, TrainRun


class DistillInitStage(Stage):
    def check(self, cfg) -> Iterable[Optional[str]]:
        from lepton_exp.training.phases import phase_epochs

        if phase_epochs(cfg) == 0:
            yield ("stage=distill_init trains the initialisation phase of ab, fsp or ft: add "
                   "one of them to distill (with init_epochs > 0)")

    def run_name(self, model: str, data: str, method: str, prune: str, sparsity: Any) -> str:
        return f"distill-{method}-init-{model}-{data}"

    def prepare(self, cfg, datamodule, train: TrainRun, run_dir=None) -> list:
        from lepton_exp.teachers.load import resolve_teachers

        return resolve_teachers(cfg, datamodule.info, train)

    def run(self, ctx: StageContext) -> StageOutput:
        from lepton_exp.models import build_model, save_weights
        from lepton_exp.models.transfer import init_from_teacher
        from lepton_exp.training.distill import distillation_module, fit_distillation
        from lepton_exp.training.init_phase import InitPhaseModule
        from lepton_exp.training.phases import STATE_NAME, phased_terms
        from lepton_exp.training.trainer import build_trainer, logged_floats

        cfg, datamodule, teachers = ctx.cfg, ctx.datamodule, ctx.prepared
        student = build_model(cfg.model, datamodule.info)
        if cfg.distill.student_init == "teacher":
            init_from_teacher(student, teachers[0].model)
        module, cache_info = distillation_module(cfg, datamodule, student, teachers,
                                                 module_class=InitPhaseModule)
        trainer, checkpoints = build_trainer(cfg, ctx.run_dir, ctx.loggers,
                                             resume_from=ctx.resume_from)
        result = fit_distillation(trainer, module, datamodule, checkpoints, test=False)
        metrics = logged_floats(trainer.callback_metrics, ("train/", "val/"))
        metrics.update(epochs=trainer.current_epoch, global_step=trainer.global_step)
        if trainer.is_global_zero:
            save_weights(module.objective, ctx.run_dir / STATE_NAME)
        cache_info.update(result.get("cache_stats", {}))
        extra = {"teachers": [t.source | {"weight": t.weight} for t in teachers],
                 "init_phase_terms": sorted(phased_terms(dict(module.objective.terms))),
                 "teacher_output_cache": cache_info}
        return StageOutput(model=student, metrics=metrics,
                           checkpoints={"last": checkpoints.last.best_model_path or None},
                           extra=extra)


STAGE = DistillInitStage()
