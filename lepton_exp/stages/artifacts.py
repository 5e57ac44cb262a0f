"""Where a distillation run's teachers come from: a checkpoint, a W&B artifact, or the cache.

The cache holds trained teachers under ``<paths.cache_dir>/teachers/<key>/`` where ``key``
hashes everything that determines the trained weights (data, model, optimiser, schedule,
epochs, seed). A teacher missing from the cache is trained by the same command, once: a
file lock makes a parallel sweep's other jobs wait for it instead of training it again, and
entries appear by an atomic directory rename, so no job ever reads a half-written teacher.
Every teacher-stage run publishes its weights there too, so a teacher trained on its own
(``lepton-exp stage=teacher model=resnet56``) is found by later distillation runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from lepton_exp.config import ConfigError, LeptonError, one_line, to_container
from lepton_exp.data.base import DataInfo
from lepton_exp.models import build_model, save_weights
from lepton_exp.tracking.record import read_record, write_json_atomic

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when what a cached teacher means changes
WEIGHTS_NAME = "model.safetensors"
ENTRY_NAME = "teacher.json"
# Settings that change the trained weights; everything else (workers, eval batch size,
# loggers, paths) does not and stays out of the key.
# (devices and num_nodes: the world size multiplies the effective batch under DDP.)
_TRAINER_KEYS = ("max_epochs", "max_steps", "precision", "accumulate_grad_batches",
                 "gradient_clip_val", "limit_train_batches", "limit_val_batches",
                 "check_val_every_n_epoch", "deterministic", "devices", "num_nodes",
                 "sync_batchnorm")
_DATA_IGNORED = ("num_workers", "eval_batch_size", "cache_dir")  # cache_dir: tokenised text


@dataclass
class Teacher:
    model: nn.Module
    weight: float
    source: dict[str, Any]  # provenance for the run record: kind, path, key, metrics


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
    run_cfg.distill.terms = {}
    run_cfg.prune.method = "none"
    run_cfg.quant.method = "none"  # teachers and dense models stay float
    run_cfg.pipeline = {}
    run_cfg.extra_teachers = []
    run_cfg.name = f"teacher-{run_cfg.model.name}-{cfg.data.name}"
    return run_cfg


def key_material(run_cfg: DictConfig) -> dict[str, Any]:
    config = to_container(run_cfg)
    return {
        "format": CACHE_FORMAT,
        "data": {k: v for k, v in config["data"].items() if k not in _DATA_IGNORED},
        "model": config["model"],
        "optim": config["optim"],
        "scheduler": config["scheduler"],
        "seed": config["seed"],
        "trainer": {k: config["trainer"].get(k) for k in _TRAINER_KEYS},
    }


def cache_key(run_cfg: DictConfig) -> str:
    text = json.dumps(key_material(run_cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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


def ensure_cached(run_cfg: DictConfig) -> tuple[Path, str]:
    """The cache entry for ``run_cfg``'s teacher, training it first when missing.

    Returns (entry directory, "hit" | "trained").
    """
    from filelock import FileLock, Timeout

    key = cache_key(run_cfg)
    root = teachers_dir(run_cfg)
    entry = root / key
    if _complete(entry) and _intact(entry):
        return entry, "hit"
    from lepton_exp.training.parallel import started_externally

    if started_externally():  # one rank would train it while the others wait on the lock
        raise ConfigError(f"teacher {run_cfg.model.name} (cache key {key}) is not cached, and "
                          "ranks started by the cluster cannot train it: train it first with "
                          "a one-node run (e.g. the same command with trainer.num_nodes=1)")
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / f"{key}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("teacher %s is being trained by another job: waiting for it", key)
        lock.acquire()
    try:
        if _complete(entry) and not _intact(entry):  # truncated by a crash or a full disk
            aside = entry.with_name(f"{key}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            log.warning("teacher cache entry %s is damaged: moved to %s, training it again",
                        entry, aside.name)
            os.rename(entry, aside)
        if _complete(entry):  # trained by the job we waited for
            return entry, "hit"
        from lepton_exp.stages.runner import run_stage  # runner imports the stages

        log.info("teacher %s (%s) is not cached: training it first", key, run_cfg.model.name)
        run_dir = root / "runs" / key
        if _earlier_status(run_dir) in ("completed", "failed"):  # it published nothing
            shutil.rmtree(run_dir, ignore_errors=True)
        # else an attempt killed mid-way (a sweep stopped, a pre-empted job): it continues
        # from its last checkpoint
        record = run_stage(run_cfg, run_dir=run_dir)
        if not _complete(entry):
            raise LeptonError(f"teacher training ended with status {record['status']} "
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


# -------------------------------------------------------------------------------- loading
def read_state_dict(path: Path, key: str) -> dict[str, torch.Tensor]:
    """Weights from a safetensors file or a Lightning/PyTorch checkpoint (weights only)."""
    if not path.is_file():
        raise ConfigError(f"{key}={path} does not exist: give a .ckpt, .pt or .safetensors file"
                          " (or remove it to train and cache the teacher)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - truncated file, pickle with code, ...
        raise ConfigError(f"cannot read {key}={path} ({one_line(error)[:160]}): is the file "
                          "complete, and a checkpoint saved by lepton-exp or torch.save?"
                          ) from error
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"{key}={path} holds no state dict")
    if any(name.startswith("model.") for name in state):  # a lepton-exp Lightning checkpoint
        state = {name.removeprefix("model."): tensor for name, tensor in state.items()
                 if name.startswith("model.")}
    from lepton_exp.prune.magnitude import fold_masks

    return fold_masks(state)  # a checkpoint taken while pruning masks were attached


def load_weights(model: nn.Module, path: Path, key: str, model_key: str,
                 info: DataInfo) -> None:
    state = read_state_dict(path, key)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = one_line(error).removeprefix("Error(s) in loading state_dict for ")
        raise ConfigError(
            f"{key}={path} does not fit {model_key} with {info.num_classes} classes and "
            f"{info.in_chans} input channels ({detail[:200]}): set {model_key} to the "
            "architecture the checkpoint was trained with, on the same data") from error


def fetch_artifact(reference: str, cache_dir: Path) -> Path:
    """Download a W&B model artifact (``entity/project/name:version``) once; its weights file."""
    target = cache_dir / "artifacts" / re.sub(r"[^\w.-]+", "_", reference)
    if not (target / ".complete").exists():
        try:
            import wandb

            wandb.Api(timeout=30).artifact(reference).download(root=str(target))
        except Exception as error:  # noqa: BLE001 - network, login, unknown artifact
            raise ConfigError(
                f"cannot fetch W&B artifact teacher.artifact={reference} "
                f"({one_line(error)[:160]}): check the reference (entity/project/name:version)"
                " and `wandb login`, or use teacher.checkpoint=<file>") from error
        (target / ".complete").touch()
    for pattern in ("*.safetensors", "*.ckpt", "*.pt", "*.pth"):
        found = sorted(target.rglob(pattern))
        if found:
            return found[0]
    raise ConfigError(f"W&B artifact {reference} holds no .safetensors/.ckpt/.pt file")


def load_trained(cfg: DictConfig, key: str, spec: DictConfig, model_cfg: DictConfig,
                 model_key: str, info: DataInfo) -> tuple[nn.Module, dict[str, Any]]:
    """A trained model of ``model_cfg`` as ``spec`` (at config ``key``) says where to get it:
    ``spec.checkpoint``, ``spec.artifact``, or the cache (trained there first when missing).
    Returns the model and its provenance for the run record."""
    if spec.checkpoint:
        path = Path(spec.checkpoint).expanduser()
        source: dict[str, Any] = {"kind": "checkpoint", "path": str(path.resolve())}
    elif spec.artifact:
        path = fetch_artifact(spec.artifact, Path(cfg.paths.cache_dir).expanduser())
        source = {"kind": "wandb_artifact", "reference": spec.artifact, "path": str(path)}
    else:
        entry, status = ensure_cached(teacher_run_config(cfg, spec, model_cfg))
        path = entry / WEIGHTS_NAME
        cached = cached_record(entry)
        source = {"kind": "cache", "cache": status, "key": entry.name, "path": str(path),
                  "run_dir": cached["run_dir"], "metrics": cached["metrics"]}
    source["model"] = model_cfg.name
    from lepton_exp.prune.export import load_pruned, pruned_recipe

    recipe = pruned_recipe(path)
    if recipe is not None:  # a pruned run's export: its own shapes, rebuilt from the file
        found = (recipe["model"], recipe.get("num_classes"), recipe.get("in_chans"))
        if found != (model_cfg.name, info.num_classes, info.in_chans):
            raise ConfigError(
                f"{key}={path} is a pruned {found[0]} for {found[1]} classes and {found[2]} "
                f"input channels, not {model_cfg.name} for {info.num_classes} and "
                f"{info.in_chans}: set {model_key}.name={found[0]} and use the data it was "
                "trained on")
        return load_pruned(path).train(), source
    model = build_model(model_cfg, info, model_key)
    load_weights(model, path, f"{key}.checkpoint" if spec.checkpoint else key,
                 f"{model_key}.name={model_cfg.name}", info)
    return model, source


def resolve_teachers(cfg: DictConfig, info: DataInfo) -> list[Teacher]:
    """Every teacher of a distillation run (``teacher`` then ``extra_teachers``), loaded."""
    teachers = []
    specs = [("teacher", cfg.teacher)] + [
        (f"extra_teachers[{i}]", spec) for i, spec in enumerate(cfg.extra_teachers)]
    for key, spec in specs:
        model, source = load_trained(cfg, key, spec, spec.model, f"{key}.model", info)
        teachers.append(Teacher(model=model, weight=spec.weight, source=source))
    total = sum(t.weight for t in teachers)
    for teacher in teachers:
        teacher.weight /= total
    return teachers
