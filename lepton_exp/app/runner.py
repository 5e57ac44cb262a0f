"""Run one stage end to end: seed, data, loggers, the stage itself, the run record, the report."""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from lepton_exp.app import same_settings
from lepton_exp.app.logs import FILE_ONLY, route_logs
from lepton_exp.config.identity import computed_settings, flatten, to_container
from lepton_exp.config.naming import method_label
from lepton_exp.config.registries import QUANT_METHODS, STAGES
from lepton_exp.config.validate import validate
from lepton_exp.data import build_datamodule
from lepton_exp.errors import LeptonError
from lepton_exp.measure import count_parameters, model_size_bytes
from lepton_exp.models import data_metadata, save_weights
from lepton_exp.stages import Stage, StageContext
from lepton_exp.tracking.loggers import (
    build_loggers,
    close_failed_loggers,
    finish_loggers,
    sweep_group,
    wandb_run_info,
)
from lepton_exp.tracking.record import (
    RECORD_NAME,
    git_state,
    library_versions,
    read_record,
    write_json_atomic,
)
from lepton_exp.tracking.report import print_summary
from lepton_exp.tracking.rundir import check_checkpoint, earlier_record, run_lock
from lepton_exp.training import parallel
from lepton_exp.training.deploy import DEPLOY_DIR, deploy_output
from lepton_exp.training.quantize import EXPORT_STEM, quantize_output

log = logging.getLogger(__name__)
EXPORT_NAME = "model.safetensors"  # the trained model of every run, for reuse without code


def hydra_job() -> tuple[Path | None, list[str] | None]:
    """This job's run directory and command-line overrides, when started by Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        return Path(hydra.runtime.output_dir), list(hydra.overrides.task)
    return None, None


def new_record(cfg: DictConfig, run_dir: Path, overrides: list[str] | None, started: float,
               config: dict) -> dict[str, Any]:
    """The fields every run record starts with (a stage's or a pipeline's)."""
    return {
        "status": "running", "stage": cfg.stage, "name": cfg.name, "seed": cfg.seed,
        "run_dir": str(run_dir.resolve()), "started_at": time.strftime(
            "%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        # The overrides re-create this job: `lepton-exp <overrides...>` (null outside Hydra).
        "overrides": overrides,
        "git": git_state(), "versions": library_versions(), "config": config,
    }


def failure(error: BaseException) -> dict[str, Any]:
    """Record fields of a run that ended by ``error`` (Ctrl-C, SIGTERM: interrupted; Lightning
    turns both into SystemExit once it has stopped the fit)."""
    stopped = isinstance(error, (KeyboardInterrupt, SystemExit))
    return {"status": "interrupted" if stopped else "failed",
            "error": f"{type(error).__name__}: {error}",
            "traceback": None if stopped or isinstance(error, LeptonError)
            else traceback.format_exc()}


def run_stage(cfg: DictConfig, run_dir: Path | None = None,
              overrides: list[str] | None = None,
              resume: Path | bool | None = None) -> dict[str, Any]:
    """Run ``cfg.stage`` and return its run record (also written to ``run_dir/summary.json``).

    A run that fails still leaves a record with ``status: failed`` and the error, so a sweep
    never loses track of it. ``overrides`` are the command-line overrides that composed
    ``cfg`` (taken from Hydra when it started this job and no ``run_dir`` is given).
    A complete earlier run of the same config in ``run_dir`` is returned as it is; an
    unfinished one continues from its last checkpoint (``cfg.resume``). ``resume``: that
    decision when already taken (a checkpoint path, or False), as in DDP workers.
    """
    run_dir, overrides = locate(cfg, run_dir, overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = to_container(cfg)
    if resume is None and parallel.started_externally():
        # Ranks started by the cluster would each read the directory while rank zero
        # rewrites it: no skip/resume for them (README: Multi-GPU).
        resume = False
    if resume is not None:  # a DDP rank: the process that launched it holds the run
        return _run(cfg, run_dir, overrides, resume, config)
    owner = same_settings.claim(run_dir, config)  # another job of this sweep runs it
    pointer = owner and same_settings.point_to(
        owner, new_record(cfg, run_dir, overrides, time.time(), config))
    if pointer:
        return pointer
    with run_lock(run_dir):
        # decided once, by the process that starts the run (not per DDP rank)
        done, resume = previous_run(cfg, run_dir, config)
        if done is not None:
            log.warning("%s is complete in %s: skipped (resume=false runs it again)",
                        cfg.name, run_dir)
            return done
        if parallel.needs_launch(cfg):
            return _launch_ddp(cfg, run_dir, overrides, resume, config)
        return _run(cfg, run_dir, overrides, resume, config)


def locate(cfg: DictConfig, run_dir: Path | None, overrides: list[str] | None
           ) -> tuple[Path, list[str] | None]:
    """Validate ``cfg`` and find where its run goes: ``run_dir``, else Hydra's job directory,
    else ``paths.output_dir/runs/<name>``; the overrides are Hydra's when it started this job
    and no ``run_dir`` is given. The runs of one sweep share a W&B group."""
    validate(cfg)
    hydra_dir, hydra_overrides = hydra_job()
    if run_dir is None:
        overrides = overrides if overrides is not None else hydra_overrides
    run_dir = Path(run_dir or hydra_dir or Path(cfg.paths.output_dir) / "runs" / cfg.name)
    route_logs()
    log.info("run %s (stage=%s) in %s%s", cfg.name, cfg.stage, run_dir,
             f": lepton-exp {' '.join(overrides)}" if overrides else "", extra=FILE_ONLY)
    if cfg.logger.group is None:
        cfg.logger.group = sweep_group()
    return run_dir, overrides


def stage_of(cfg: DictConfig) -> Stage:
    return STAGES.attribute(cfg.stage, "STAGE")


def _run(cfg: DictConfig, run_dir: Path, overrides: list[str] | None,
         resume: Path | bool | None, config: dict) -> dict[str, Any]:
    threads = parallel.configure_threads(cfg.get("threads"))
    started = time.time()
    record = new_record(cfg, run_dir, overrides, started, config)
    record["torch_threads"] = threads
    wandb_id = None
    if resume:
        record["resumed_from"] = str(resume)
        # the W&B run of the interrupted attempt continues (its id is in that record)
        wandb_id = (earlier_record(run_dir).get("wandb") or {}).get("id")
    # Under DDP every rank runs this function; only rank zero owns the record, the W&B
    # run's finish and the report (Lightning already logs metrics from rank zero only).
    is_rank_zero = rank_zero_only.rank == 0
    if is_rank_zero:
        write_json_atomic(run_dir / RECORD_NAME, record)
    loggers: list = []
    summary: dict[str, Any] = {}
    try:
        summary = _execute(cfg, run_dir, resume, wandb_id, config, record, loggers)
    except BaseException as error:
        record.update(failure(error))
        raise
    finally:
        record["wall_time_s"] = round(time.time() - started, 3)
        if is_rank_zero:
            _close(record, loggers, run_dir, summary)
    if is_rank_zero:
        print_summary(record)
    return record


def _execute(cfg: DictConfig, run_dir: Path, resume: Path | bool | None,
             wandb_id: str | None, config: dict, record: dict[str, Any], loggers: list
             ) -> dict[str, Any]:
    """Data, the stage's preparation, loggers, the stage, quantization and export; fills
    ``record`` (and ``loggers``) in place and returns the W&B summary's extra entries."""
    is_rank_zero = rank_zero_only.rank == 0
    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    stage = stage_of(cfg)
    # Before this run's W&B run starts: a missing teacher trains as a run of its own.
    prepared = stage.prepare(cfg, datamodule, run_stage, run_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    # `method` beside the flat config: W&B tables group ablations by one column
    loggers += build_loggers(cfg, run_dir, {**flatten(config),
                                            "method": method_label(cfg.distill.terms)},
                             resume_id=wandb_id)
    if is_rank_zero:  # known from now on: a resumed attempt logs into the same W&B run
        record["wandb"] = wandb_run_info(loggers)
        write_json_atomic(run_dir / RECORD_NAME, record)
    context = StageContext(cfg, run_dir, datamodule, loggers, prepared, resume or None)
    output = stage.run(context)
    if hasattr(QUANT_METHODS.get(cfg.quant.method), "quantize"):  # the model becomes int8
        output = quantize_output(context, output)
    if is_rank_zero:
        metadata = data_metadata(datamodule.input_description())  # how to feed it
        save_weights(output.model, run_dir / EXPORT_NAME,
                     {**(output.export_metadata or {}), **metadata})
    if cfg.export.formats:  # deployment files, checked and timed in their runtimes
        output = deploy_output(context, output)
    record.update(
        status="completed",
        metrics=output.metrics,
        num_params=count_parameters(output.model),
        model_size_bytes=model_size_bytes(output.model),
        checkpoints=output.checkpoints,
        data={"train": len(datamodule.train), "val": len(datamodule.val),
              "test": len(datamodule.test), **asdict(datamodule.info),
              **{f"test_{name}": len(split) for name, split in
                 getattr(datamodule, "extra_tests", {}).items()},
              **_skipped(datamodule)},
        exported=str(run_dir / EXPORT_NAME),
        wandb=wandb_run_info(loggers) if is_rank_zero else None,
        **output.extra,
    )
    return output.summary


def _skipped(datamodule) -> dict[str, Any]:
    """Files left out because they could not be decoded (``data.skip_bad_files=true``)."""
    if not datamodule.cfg.get("skip_bad_files"):
        return {}
    skipped = datamodule.skipped_files()
    return {"skipped_files": len(skipped), "skipped_examples": skipped[:10]}


def _close(record: dict[str, Any], loggers: list, run_dir: Path,
           summary: dict[str, Any]) -> None:
    """Rank zero: the final record, and the W&B run finished (or closed after a failure)."""
    write_json_atomic(run_dir / RECORD_NAME, record)
    if record["status"] != "completed":
        close_failed_loggers(loggers)
        return
    finish_loggers(loggers, {
        **record["metrics"], "num_params": record["num_params"],
        "model_size_bytes": record["model_size_bytes"],
        "wall_time_s": record["wall_time_s"], **summary})


# What an earlier attempt of another config leaves in a run directory, set aside before
# this one starts (a stale checkpoint must never be continued by a later re-run): the files
# every run writes, the int8 export, and what any stage or quant method declares it writes.
_RUN_ARTEFACTS = (RECORD_NAME, "checkpoints", EXPORT_NAME, "wandb", "csv", f"{EXPORT_STEM}.*",
                  DEPLOY_DIR)


def run_artefacts() -> tuple[str, ...]:
    """Glob patterns of everything runs write into their directory."""
    declared = [pattern for registry in (STAGES, QUANT_METHODS) for name in registry
                for pattern in getattr(registry.get(name), "ARTEFACTS", ())]
    return (*_RUN_ARTEFACTS, *declared)


def previous_run(cfg: DictConfig, run_dir: Path, config: dict
                 ) -> tuple[dict[str, Any] | None, Path | None]:
    """(the record of a complete earlier run of this config in ``run_dir``, or None;
    the last checkpoint of an unfinished one to continue from, or None). An earlier run of
    another config is moved to ``run_dir/replaced-<time>/``, never overwritten."""
    path = run_dir / RECORD_NAME
    if not path.exists():
        return None, None
    try:
        previous = read_record(run_dir)
    except ValueError:  # a record cut short by a crash: nothing to trust in it
        previous = {}
    same = computed_settings(previous.get("config") or {}) == computed_settings(config)
    if not same or not cfg.resume:
        aside = _set_aside(run_dir)
        log.warning("%s held %s: moved to %s, starting this run from scratch", run_dir,
                    "a run of another config" if not same else "an earlier attempt", aside)
        return None, None
    if previous.get("status") == "completed":
        return previous, None
    point = stage_of(cfg).resume_point(cfg, run_dir)
    if point is not None and point.suffix == ".ckpt":
        check_checkpoint(point)
    return None, point


def _set_aside(run_dir: Path) -> Path:
    import tempfile

    aside = Path(tempfile.mkdtemp(prefix=f"replaced-{time.strftime('%Y%m%d-%H%M%S')}-",
                                  dir=run_dir))
    for pattern in run_artefacts():
        for path in run_dir.glob(pattern):
            path.rename(aside / path.name)
    return aside


def _launch_ddp(cfg: DictConfig, run_dir: Path, overrides: list[str] | None,
                resume: Path | bool | None, config: dict) -> dict[str, Any]:
    """Teachers and dense models are made (and cached) here first, with DDP runs of their
    own, so the ranks only load them; then the ranks run the stage (rank zero's record)."""
    started = time.time()
    try:
        datamodule = build_datamodule(cfg.data)
        datamodule.setup()
        stage_of(cfg).prepare(cfg, datamodule, run_stage, run_dir)
        return parallel.launch(run_stage, cfg, run_dir, overrides, resume)
    except BaseException as error:
        # Rank zero's record says what went wrong; without one (the failure came first),
        # this process leaves it, so the run is never lost.
        path = run_dir / RECORD_NAME
        record = read_record(run_dir) if path.exists() else {}
        if record.get("status") not in ("failed", "interrupted"):
            record = {**new_record(cfg, run_dir, overrides, started, config), **failure(error),
                      "wall_time_s": round(time.time() - started, 3)}
            write_json_atomic(path, record)
        raise
