"""Distill stage: a student trained against one or more frozen teachers (or alone, with
``distill=none``: the baseline). The training itself is lepton_exp.training.distill."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from lepton_exp.stages import Stage, StageContext, StageOutput, TrainRun


@dataclass
class Prepared:
    teachers: list
    init_phase: Optional[dict] = None  # the record of the methods' initialisation phase


class DistillStage(Stage):
    def run_name(self, model: str, data: str, method: str, prune: str, sparsity: Any) -> str:
        return f"distill-{method}-{model}-{data}"

    def prepare(self, cfg, datamodule, train: TrainRun, run_dir=None) -> Prepared:
        """The teachers, loaded or trained (and cached), if any is needed (a student trained
        alone, `distill=none`, needs none), then the methods' initialisation phase (AB, FSP,
        FT), run or found complete in ``run_dir/init``."""
        from lepton_exp.teachers.load import resolve_teachers
        from lepton_exp.training.distill import check_compatible
        from lepton_exp.training.init_phase import run_init_phase

        if not cfg.distill.terms and cfg.distill.student_init == "scratch":
            return Prepared([])
        check_compatible(cfg, datamodule)
        teachers = resolve_teachers(cfg, datamodule.info, train)
        phase = run_init_phase(cfg, train, Path(run_dir)) if run_dir is not None else None
        return Prepared(teachers, phase)

    def run(self, ctx: StageContext) -> StageOutput:
        from lepton_exp.models import build_model
        from lepton_exp.models.transfer import init_from_teacher
        from lepton_exp.training.distill import distillation_module, fit_distillation
        from lepton_exp.training.trainer import build_trainer

        cfg, datamodule = ctx.cfg, ctx.datamodule
        teachers, phase = ctx.prepared.teachers, ctx.prepared.init_phase
        student = build_model(cfg.model, datamodule.info)
        student_init = None
        if cfg.distill.student_init == "teacher":
            student_init = init_from_teacher(student, teachers[0].model)
        phase_dir = Path(phase["run_dir"]) if phase else None
        module, cache_info = distillation_module(cfg, datamodule, student, teachers,
                                                 phase_dir=phase_dir)
        trainer, checkpoints = build_trainer(cfg, ctx.run_dir, ctx.loggers,
                                             resume_from=ctx.resume_from)
        result = fit_distillation(trainer, module, datamodule, checkpoints)
        cache_info.update(result.get("cache_stats", {}))
        extra = {
            "teachers": [t.source | {"weight": t.weight} for t in teachers],
            "student_init": student_init,
            "teacher_output_cache": cache_info,
            # the configured terms (a term whose phase ended is no longer in the objective)
            "distill_terms": sorted(cfg.distill.terms or {}),
            "timing": result["timing"],
        }
        if phase:
            extra["init_phase"] = {key: phase.get(key) for key in (
                "status", "run_dir", "metrics", "init_phase_terms", "wall_time_s")}
        return StageOutput(model=student, metrics=result["metrics"],
                           checkpoints=result["checkpoints"], extra=extra,
                           teachers=list(teachers) if module.objective.terms else [])


STAGE = DistillStage()
