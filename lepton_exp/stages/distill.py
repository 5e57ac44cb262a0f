"""Distill stage: a student trained against one or more frozen teachers (or alone, with
``distill=none``: the baseline). The training itself is lepton_exp.training.distill."""

from __future__ import annotations

from typing import Any

from lepton_exp.stages import Stage, StageContext, StageOutput, TrainRun


class DistillStage(Stage):
    def run_name(self, model: str, data: str, method: str, prune: str, sparsity: Any) -> str:
        return f"distill-{method}-{model}-{data}"

    def prepare(self, cfg, datamodule, train: TrainRun) -> list:
        """The teachers, loaded or trained (and cached), if any is needed (a student trained
        alone, `distill=none`, needs none)."""
        from lepton_exp.teachers.load import resolve_teachers
        from lepton_exp.training.distill import check_compatible

        if not cfg.distill.terms and cfg.distill.student_init == "scratch":
            return []
        check_compatible(cfg, datamodule)
        return resolve_teachers(cfg, datamodule.info, train)

    def run(self, ctx: StageContext) -> StageOutput:
        from lepton_exp.models import build_model
        from lepton_exp.models.transfer import init_from_teacher
        from lepton_exp.training.distill import distillation_module, fit_distillation
        from lepton_exp.training.trainer import build_trainer

        cfg, datamodule, teachers = ctx.cfg, ctx.datamodule, ctx.prepared
        student = build_model(cfg.model, datamodule.info)
        student_init = None
        if cfg.distill.student_init == "teacher":
            student_init = init_from_teacher(student, teachers[0].model)
        module, cache_info = distillation_module(cfg, datamodule, student, teachers)
        trainer, checkpoints = build_trainer(cfg, ctx.run_dir, ctx.loggers,
                                             resume_from=ctx.resume_from)
        result = fit_distillation(trainer, module, datamodule, checkpoints)
        cache_info.update(result.get("cache_stats", {}))
        extra = {
            "teachers": [t.source | {"weight": t.weight} for t in teachers],
            "student_init": student_init,
            "teacher_output_cache": cache_info,
            "distill_terms": sorted(module.objective.terms),
            "timing": result["timing"],
        }
        return StageOutput(model=student, metrics=result["metrics"],
                           checkpoints=result["checkpoints"], extra=extra,
                           teachers=list(teachers) if module.objective.terms else [])


STAGE = DistillStage()
