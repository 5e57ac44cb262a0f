"""Teacher stage: supervised training of a classifier on the configured data.

The trained model (best validation epoch) also goes into the teacher cache, so distillation
runs asking for this teacher (same data, model, optimisation, seed) reuse it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

from lepton_exp.stages import Stage, StageContext, StageOutput, TrainRun


class TeacherStage(Stage):
    def check(self, cfg) -> Iterable[Optional[str]]:
        from lepton_exp.config.checks import pretrained

        if cfg.distill.terms:
            yield (f"distill terms ({', '.join(cfg.distill.terms)}) apply to stage=distill, "
                   "but stage=teacher: add stage=distill, or drop the distill option")
        if cfg.trainer.max_epochs == 0 and not pretrained(cfg.model):
            yield ("trainer.max_epochs=0 evaluates a pretrained model as it is (what "
                   "teacher.max_epochs=0 asks of a teacher): set model.pretrained=true (timm) "
                   "or model.pretrained_path (transformers), or train it for some epochs")

    def run_name(self, model: str, data: str, method: str, prune: str, sparsity: Any) -> str:
        return f"teacher-{model}-{data}"

    # A teacher step trains (or finds) the teacher that the pipeline's distill steps use: its
    # model is in the teacher cache, where those steps' own settings find it.
    exports_model = False

    def step_config(self, cfg):
        from lepton_exp.teachers.cache import teacher_run_config

        return teacher_run_config(cfg, cfg.teacher)

    def run_step(self, cfg, run_dir, overrides: list[str], run: TrainRun) -> dict[str, Any]:
        if cfg.teacher.checkpoint or cfg.teacher.artifact:
            return _given_teacher(cfg, run)
        import json

        from lepton_exp.teachers.cache import cached_record, ensure_cached
        from lepton_exp.tracking.record import RECORD_NAME

        entry, status = ensure_cached(cfg, run)
        cached = cached_record(entry)
        record_path = Path(cached["run_dir"]) / RECORD_NAME
        record = json.loads(record_path.read_text()) if record_path.exists() else {
            "status": "completed", "metrics": cached["metrics"], "run_dir": cached["run_dir"]}
        return {**record, "teacher_cache": status, "stage": "teacher"}

    def run(self, ctx: StageContext) -> StageOutput:
        from lepton_exp.models import build_model, check_pretrained_head
        from lepton_exp.teachers.cache import publish
        from lepton_exp.training.classify import ClassificationModule
        from lepton_exp.training.trainer import build_trainer, fit_and_test

        cfg = ctx.cfg
        if cfg.trainer.max_epochs == 0:  # its pretrained classifier must fit the data
            check_pretrained_head(cfg.model, ctx.datamodule.info, "the teacher")
        model = build_model(cfg.model, ctx.datamodule.info)
        module = ClassificationModule(model, ctx.datamodule.info, cfg.optim, cfg.scheduler)
        trainer, checkpoints = build_trainer(cfg, ctx.run_dir, ctx.loggers,
                                             resume_from=ctx.resume_from)
        if cfg.trainer.max_epochs == 0:  # pretrained weights as they are: evaluated only
            result = _evaluated_as_is(trainer, module, ctx.datamodule)
        else:
            result = fit_and_test(trainer, checkpoints, module, ctx.datamodule)
        extra = {"timing": result["timing"]}
        if trainer.is_global_zero:
            entry = publish(cfg, model, result["metrics"], result["weights_from"], ctx.run_dir)
            extra["teacher_cache"] = {"key": entry.name, "path": str(entry)}
        return StageOutput(model=model, metrics=result["metrics"],
                           checkpoints=result["checkpoints"], extra=extra)


def _evaluated_as_is(trainer, module, datamodule) -> dict[str, Any]:
    """``fit_and_test``'s result for a model that is not trained: its validation and test
    metrics (as val/* and test/*), no checkpoints."""
    from lepton_exp.training.trainer import tested_keys

    metrics: dict[str, float] = {}
    for evaluate, prefixes in ((trainer.validate, ("val/",)), (trainer.test, tested_keys(module))):
        evaluate(module, datamodule=datamodule, verbose=False)
        metrics.update({key: float(value) for key, value in trainer.callback_metrics.items()
                        if key.startswith(prefixes)})
    metrics.update(epochs=0, global_step=0)
    return {"metrics": metrics, "checkpoints": {"last": None, "best": None},
            "weights_from": None, "timing": None}


def _given_teacher(cfg, run: TrainRun) -> dict[str, Any]:
    """A teacher from teacher.checkpoint / teacher.artifact: loaded and tested, not trained."""
    from lepton_exp.data import build_datamodule
    from lepton_exp.measure import count_parameters, model_size_bytes
    from lepton_exp.teachers.load import resolve_teachers
    from lepton_exp.training.classify import ClassificationModule
    from lepton_exp.training.trainer import evaluate

    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    teacher, = resolve_teachers(cfg, datamodule.info, run)
    module = ClassificationModule(teacher.model, datamodule.info, cfg.optim, cfg.scheduler)
    return {"status": "completed", "stage": "teacher", "run_dir": None,
            "metrics": evaluate(module, datamodule, "test", cfg.trainer),
            "num_params": count_parameters(teacher.model),
            "model_size_bytes": model_size_bytes(teacher.model),
            "teacher_cache": teacher.source["kind"], "teacher_path": teacher.source["path"]}


STAGE = TeacherStage()
