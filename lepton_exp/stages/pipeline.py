"""A pipeline: several stages run one after the other, each a run of its own, then one table.

``pipeline`` maps step names to override lists applied on top of this job's command line
(conf/experiment/quickstart.yaml). A step with ``stage=teacher`` trains — or finds in the
teacher cache — the teacher that the pipeline's distillation steps will use (``teacher.*``),
so it is trained once and the distill steps hit the cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lepton_exp.config import (CONF_DIR, ROOT_CONFIG, ConfigError, one_line, to_container,
                               validate)
from lepton_exp.tracking.record import RECORD_NAME, write_json_atomic
from lepton_exp.tracking.report import print_pipeline


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose conf/ with these overrides, inside a running Hydra app or outside one."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    try:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name=ROOT_CONFIG, overrides=overrides)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=ROOT_CONFIG, overrides=overrides)
    except Exception as error:  # noqa: BLE001 - Hydra's composition errors, made one line
        raise ConfigError(f"cannot compose pipeline step with {overrides}: "
                          f"{one_line(error)[:200]}") from error


STEP_REFERENCE = "step:"  # `prune.dense.checkpoint=step:kd`: the model exported by step kd


def _resolve_references(name: str, step_overrides: list[str], earlier: dict[str, Any],
                        run_dir: Path) -> list[str]:
    """``key=step:<earlier step>`` becomes that step's exported model file (it exists once
    the earlier step has run, which the order of the steps guarantees)."""
    from lepton_exp.stages.runner import EXPORT_NAME

    resolved = []
    for override in step_overrides:
        key, _, value = override.partition("=")
        if value.startswith(STEP_REFERENCE):
            source = value.removeprefix(STEP_REFERENCE)
            if source not in earlier:
                raise ConfigError(f"pipeline.{name}: {override} must name an earlier step "
                                  f"(one of {', '.join(earlier) or 'none'})")
            if earlier[source][0].stage == "teacher":
                raise ConfigError(f"pipeline.{name}: {override}: a teacher step's model is "
                                  "in the teacher cache: leave the key unset, the same "
                                  "settings find it there")
            override = f"{key}={run_dir / source / EXPORT_NAME}"
        resolved.append(override)
    return resolved


def _step_configs(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    from lepton_exp.stages.artifacts import teacher_run_config

    steps: dict[str, Any] = {}
    # The pipeline's runs sit together in W&B, in a group no other pipeline run shares.
    group = f"{cfg.name}-{hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]}"
    for name, step_overrides in cfg.pipeline.items():
        extra = [f"name={cfg.name}-{name}"]
        if cfg.logger.group is None:
            extra.append(f"logger.group={group}")
        step_list = [*overrides, *extra,
                     *_resolve_references(name, list(step_overrides), steps, run_dir)]
        step_cfg = compose_config(step_list)
        if step_cfg.stage == "pipeline":
            raise ConfigError(f"pipeline.{name} must set a stage other than pipeline "
                              "(stage=teacher or stage=distill)")
        if step_cfg.stage == "teacher":
            step_cfg = teacher_run_config(step_cfg, step_cfg.teacher)
        validate(step_cfg)
        steps[name] = (step_cfg, step_list)
    return steps


def _given_teacher_step(step_cfg: DictConfig) -> dict[str, Any]:
    """A teacher from teacher.checkpoint / teacher.artifact: loaded and tested, not trained."""
    from lepton_exp.data import build_datamodule
    from lepton_exp.models import count_parameters, model_size_bytes
    from lepton_exp.stages.artifacts import resolve_teachers
    from lepton_exp.stages.classify import ClassificationModule
    from lepton_exp.training.trainer import evaluate

    datamodule = build_datamodule(step_cfg.data)
    datamodule.setup()
    teacher, = resolve_teachers(step_cfg, datamodule.info)
    module = ClassificationModule(teacher.model, datamodule.info, step_cfg.optim,
                                  step_cfg.scheduler)
    return {"status": "completed", "stage": "teacher", "run_dir": None,
            "metrics": evaluate(module, datamodule, "test", step_cfg.trainer),
            "num_params": count_parameters(teacher.model),
            "model_size_bytes": model_size_bytes(teacher.model),
            "teacher_cache": teacher.source["kind"], "teacher_path": teacher.source["path"]}


def _teacher_step(step_cfg: DictConfig) -> dict[str, Any]:
    from lepton_exp.stages.artifacts import cached_record, ensure_cached

    if step_cfg.teacher.checkpoint or step_cfg.teacher.artifact:
        return _given_teacher_step(step_cfg)
    entry, status = ensure_cached(step_cfg)
    cached = cached_record(entry)
    record_path = Path(cached["run_dir"]) / RECORD_NAME
    record = json.loads(record_path.read_text()) if record_path.exists() else {
        "status": "completed", "metrics": cached["metrics"], "run_dir": cached["run_dir"]}
    return {**record, "teacher_cache": status, "stage": "teacher"}


def run_pipeline(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    from lepton_exp.stages.runner import failure, new_record, run_stage

    if not cfg.pipeline:
        raise ConfigError("stage=pipeline needs steps: pipeline: {name: [overrides...]} "
                          "(see conf/experiment/quickstart.yaml)")
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    # Without the job's own stage override: each step sets its stage.
    base = [o for o in overrides if not o.startswith(("stage=", "+stage="))]
    steps = _step_configs(cfg, run_dir, base)
    record = {**new_record(cfg, run_dir, overrides, started, to_container(cfg)), "steps": {}}
    try:
        for name, (step_cfg, step_list) in steps.items():
            if step_cfg.stage == "teacher":
                result = _teacher_step(step_cfg)
            else:
                result = run_stage(step_cfg, run_dir=run_dir / name, overrides=step_list)
            record["steps"][name] = {
                key: result.get(key) for key in ("status", "stage", "name", "run_dir",
                                                 "metrics", "num_params", "model_size_bytes",
                                                 "teacher_cache", "distill_terms")}
            record["steps"][name]["model"] = step_cfg.model.name
            if result.get("quant"):  # the int8 model beside the float one in the table
                from lepton_exp.stages.quantize import quant_summary

                record["steps"][name]["quant"] = quant_summary(result)
            if step_cfg.stage == "prune":
                record["steps"][name]["prune"] = (f"{step_cfg.prune.method} "
                                                  f"{step_cfg.prune.sparsity:g}")
            if result.get("teachers"):  # a distill step: where its teacher came from
                source = result["teachers"][0]
                record["steps"][name]["teacher_cache"] = source.get("cache", source["kind"])
        record["status"] = "completed"
    except BaseException as error:
        record.update(failure(error))
        raise
    finally:
        record["wall_time_s"] = round(time.time() - started, 3)
        write_json_atomic(run_dir / RECORD_NAME, record)
    print_pipeline(record)
    return record
