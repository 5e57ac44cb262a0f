"""The teacher cache: trained teachers (and dense models to prune), trained once per setting.

The cache holds trained teachers under ``<paths.cache_dir>/teachers/<key>/`` where ``key``
hashes everything that determines the trained weights (data, model, optimiser, schedule,
epochs, seed). A teacher missing from the cache is trained by the same command, once: a
file lock makes a parallel sweep's other jobs wait for it instead of training it again, and
entries appear by an atomic directory rename, so no job ever reads a half-written teacher.
Every teacher-stage run publishes its weights there too, so a teacher trained on its own
(``lepton-exp stage=teacher model=resnet56``) is found by later distillation runs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from lepton_exp.config.identity import teacher_settings, to_container
from lepton_exp.config.naming import run_name
from lepton_exp.config.registries import DATASETS, NONE, PRUNE_METHODS, QUANT_METHODS
from lepton_exp.config.schemas import DistillConfig
from lepton_exp.digest import short_hash
from lepton_exp.errors import ConfigError, LeptonError
from lepton_exp.models import save_weights
from lepton_exp.processes import started_externally
from lepton_exp.teachers import TrainRun
from lepton_exp.tracking.record import read_record, write_json_atomic

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when what a cached teacher means changes
WEIGHTS_NAME = "model.safetensors"
ENTRY_NAME = "teacher.json"


# ------------------------------------------------------------------------------- cache key
def teacher_run_config(cfg: DictConfig, spec: DictConfig,
                       model: DictConfig | None = None) -> DictConfig:
    """The teacher-stage config that trains the teacher ``spec`` (of architecture
    ``model``, default ``spec.model``) on ``cfg``'s data."""
    run_cfg = cfg.copy()
    run_cfg.stage = "teacher"
    run_cfg.model = model if model is not None else spec.model
    run_cfg.seed = spec.seed
    if spec.lr is not None:
        run_cfg.optim.lr = spec.lr
    if spec.max_epochs is not None:
        run_cfg.trainer.max_epochs = spec.max_epochs
    # Not distilled, not pruned, float: whatever run asks for it, the same teacher run (an
    # interrupted one is continued whichever method asks for it next).
    run_cfg.distill = OmegaConf.structured(DistillConfig)
    run_cfg.prune = OmegaConf.structured(PRUNE_METHODS.get(NONE).Schema(method=NONE))
    run_cfg.quant = OmegaConf.structured(QUANT_METHODS.get(NONE).Schema(method=NONE))
    run_cfg.pipeline = {}
    run_cfg.extra_teachers = []
    run_cfg.name = run_name(run_cfg.stage, run_cfg.model.name, cfg.data.name, {})
    return run_cfg


def key_material(run_cfg: DictConfig) -> dict[str, Any]:
    """What determines the trained weights: the run's computed settings of its data, model,
    optimisation, schedule, trainer and seed (workers, loggers, paths ... are left out), and
    for data sets read from a changing folder, what is in it (their ``data_identity``)."""
    material = {"format": CACHE_FORMAT, **teacher_settings(to_container(run_cfg))}
    identity = getattr(DATASETS.get(run_cfg.data.name), "data_identity", None)
    if identity is not None:
        material["data_identity"] = identity(run_cfg.data)
    return material


def cache_key(run_cfg: DictConfig) -> str:
    return short_hash(key_material(run_cfg), 16)


def teachers_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.cache_dir).expanduser() / "teachers"


def _complete(entry: Path) -> bool:
    return (entry / WEIGHTS_NAME).is_file() and (entry / ENTRY_NAME).is_file()


# ------------------------------------------------------------------------------- publishing
def publish(run_cfg: DictConfig, model: nn.Module, metrics: dict[str, float],
            checkpoint: str | None, run_dir: Path) -> Path:
    """Put a trained teacher into the cache (no-op when an entry exists already)."""
    key = cache_key(run_cfg)
    entry = teachers_dir(run_cfg) / key
    if _complete(entry):
        return entry
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = entry.parent / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    save_weights(model, staging / WEIGHTS_NAME)
    write_json_atomic(staging / ENTRY_NAME, {
        "key": key, "key_material": key_material(run_cfg), "checkpoint": checkpoint,
        "metrics": metrics, "run_dir": str(Path(run_dir).resolve()),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    try:
        os.rename(staging, entry)  # atomic: readers see no entry or a complete one
    except OSError:  # another job published the same teacher first: theirs is as good
        shutil.rmtree(staging, ignore_errors=True)
    return entry


def ensure_cached(run_cfg: DictConfig, train: TrainRun, role: str = "teacher"
                  ) -> tuple[Path, str]:
    """The cache entry for ``run_cfg``'s teacher, training it first (``train(run_cfg,
    run_dir=...)``) when missing. ``role``: what the caller uses it as, for the log (a prune
    run's dense model is trained and cached as a teacher of the same settings is).

    Returns (entry directory, "hit" | "trained").
    """
    from filelock import FileLock, Timeout

    key = cache_key(run_cfg)
    root = teachers_dir(run_cfg)
    entry = root / key
    if _complete(entry) and _intact(entry):
        return entry, "hit"
    if started_externally():  # one rank would train it while the others wait on the lock
        raise ConfigError(f"{role} {run_cfg.model.name} (cache key {key}) is not cached, and "
                          "ranks started by the cluster cannot train it: train it first with "
                          "a one-node run (e.g. the same command with trainer.num_nodes=1)")
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / f"{key}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("%s %s is being trained by another job: waiting for it", role, key)
        lock.acquire()
    try:
        if _complete(entry) and not _intact(entry):  # truncated by a crash or a full disk
            aside = entry.with_name(f"{key}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            log.warning("teacher cache entry %s is damaged: moved to %s, training it again",
                        entry, aside.name)
            os.rename(entry, aside)
        if _complete(entry):  # trained by the job we waited for
            return entry, "hit"
        run_dir = root / "runs" / key
        log.info("%s %s (%s) is not cached: training it first (a stage=teacher run in %s)",
                 role, key, run_cfg.model.name, run_dir)
        if _earlier_status(run_dir) in ("completed", "failed"):  # it published nothing
            shutil.rmtree(run_dir, ignore_errors=True)
        # else an attempt killed mid-way (a sweep stopped, a pre-empted job): it continues
        # from its last checkpoint
        record = train(run_cfg, run_dir=run_dir)
        if not _complete(entry):
            raise LeptonError(f"{role} training ended with status {record['status']} "
                              f"without a cache entry: see {run_dir / 'summary.json'}")
        return entry, "trained"
    finally:
        lock.release()


def _intact(entry: Path) -> bool:
    """Whether a cache entry's files read back whole (safetensors checks that its header's
    tensors cover the file: a truncated write fails here, not halfway through a run)."""
    from safetensors import safe_open

    try:
        json.loads((entry / ENTRY_NAME).read_text())
        with safe_open(str(entry / WEIGHTS_NAME), "pt") as weights:
            weights.keys()
    except Exception:  # noqa: BLE001 - any damage means: rebuild it
        return False
    return True


def _earlier_status(run_dir: Path) -> str | None:
    try:
        return read_record(run_dir).get("status")
    except (OSError, ValueError):
        return None


def cached_record(entry: Path) -> dict[str, Any]:
    return json.loads((entry / ENTRY_NAME).read_text())
