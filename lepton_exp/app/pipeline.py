"""A pipeline: several stages run one after the other, each a run of its own, then one table.

``pipeline`` maps step names to override lists applied on top of this job's command line
(conf/experiment/quickstart.yaml). A step with ``stage=teacher`` trains — or finds in the
teacher cache — the teacher that the pipeline's distillation steps will use (``teacher.*``),
so it is trained once and the distill steps hit the cache.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lepton_exp.app.runner import EXPORT_NAME, failure, locate, new_record, run_stage, stage_of
from lepton_exp.config.compose import compose_config
from lepton_exp.config.identity import to_container
from lepton_exp.config.validate import PIPELINE, validate
from lepton_exp.digest import short_hash
from lepton_exp.errors import ConfigError
from lepton_exp.tracking.record import RECORD_NAME, write_json_atomic
from lepton_exp.tracking.report import print_pipeline
from lepton_exp.training.quantize import quant_summary

STEP_REFERENCE = "step:"  # `prune.dense.checkpoint=step:kd`: the model exported by step kd


def _resolve_references(name: str, step_overrides: list[str], earlier: dict[str, Any],
                        run_dir: Path) -> list[str]:
    """``key=step:<earlier step>`` becomes that step's exported model file (it exists once
    the earlier step has run, which the order of the steps guarantees)."""
    resolved = []
    for override in step_overrides:
        key, _, value = override.partition("=")
        if value.startswith(STEP_REFERENCE):
            source = value.removeprefix(STEP_REFERENCE)
            if source not in earlier:
                raise ConfigError(f"pipeline.{name}: {override} must name an earlier step "
                                  f"(one of {', '.join(earlier) or 'none'})")
            if not stage_of(earlier[source][0]).exports_model:
                raise ConfigError(f"pipeline.{name}: {override}: a teacher step's model is "
                                  "in the teacher cache: leave the key unset, the same "
                                  "settings find it there")
            override = f"{key}={run_dir / source / EXPORT_NAME}"
        resolved.append(override)
    return resolved


def _step_configs(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    # The pipeline's runs sit together in W&B, in a group no other pipeline run shares.
    group = f"{cfg.name}-{short_hash(str(run_dir.resolve()))}"
    for name, step_overrides in cfg.pipeline.items():
        extra = [f"name={cfg.name}-{name}"]
        if cfg.logger.group is None:
            extra.append(f"logger.group={group}")
        step_list = [*overrides, *extra,
                     *_resolve_references(name, list(step_overrides), steps, run_dir)]
        step_cfg = compose_config(step_list)
        if step_cfg.stage == PIPELINE:
            raise ConfigError(f"pipeline.{name} must set a stage other than pipeline "
                              "(stage=teacher or stage=distill)")
        step_cfg = stage_of(step_cfg).step_config(step_cfg)
        validate(step_cfg)
        steps[name] = (step_cfg, step_list)
    return steps


def run_pipeline(cfg: DictConfig, run_dir: Path | None = None,
                 overrides: list[str] | None = None) -> dict[str, Any]:
    """Each step a run of its own (``run_dir/<step>``), then the table; the pipeline's record
    (its steps' records inside)."""
    run_dir, overrides = locate(cfg, run_dir, overrides)
    overrides = overrides or []
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
            result = stage_of(step_cfg).run_step(step_cfg, run_dir / name, step_list, run_stage)
            record["steps"][name] = {
                key: result.get(key) for key in ("status", "stage", "name", "run_dir",
                                                 "metrics", "num_params", "model_size_bytes",
                                                 "teacher_cache", "distill_terms")}
            record["steps"][name]["model"] = step_cfg.model.name
            if result.get("quant"):  # the int8 model beside the float one in the table
                record["steps"][name]["quant"] = quant_summary(result)
            if result.get("deploy"):  # each runtime's export, a row of its own
                record["steps"][name]["deploy"] = result["deploy"]
            record["steps"][name].update(stage_of(step_cfg).table_row(step_cfg))
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
