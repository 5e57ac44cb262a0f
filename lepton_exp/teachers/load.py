"""Where a run's teachers (and the dense model of a prune run) come from: a checkpoint, a
W&B artifact, or the teacher cache (trained there first when missing)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from lepton_exp.config.checkpoints import GIVE, missing, stored_architecture, unreadable
from lepton_exp.data.base import DataInfo
from lepton_exp.errors import ConfigError, one_line
from lepton_exp.measure import fold_masks
from lepton_exp.models import CIFAR_MODEL_NAMES, build_model, check_class_names
from lepton_exp.prune.export import load_pruned, pruned_recipe
from lepton_exp.teachers import TrainRun
from lepton_exp.teachers.cache import (
    WEIGHTS_NAME,
    cached_record,
    ensure_cached,
    teacher_run_config,
)


@dataclass
class Teacher:
    model: nn.Module
    weight: float
    source: dict[str, Any]  # provenance for the run record: kind, path, key, metrics


def read_state_dict(path: Path, key: str) -> dict[str, torch.Tensor]:
    """Weights from a safetensors file or a Lightning/PyTorch checkpoint (weights only)."""
    if not path.is_file():
        raise ConfigError(missing(key, path))
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - truncated file, pickle with code, ...
        what = unreadable(path, error) or f"does not load ({one_line(error)[:80]})"
        raise ConfigError(f"cannot read {key}={path}: the file {what}: {GIVE}") from None
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"{key}={path} holds no state dict")
    if any(name.startswith("model.") for name in state):  # a lepton-exp Lightning checkpoint
        state = {name.removeprefix("model."): tensor for name, tensor in state.items()
                 if name.startswith("model.")}
    return fold_masks(state)  # a checkpoint taken while pruning masks were attached


def load_weights(model: nn.Module, path: Path, key: str, model_key: str,
                 info: DataInfo) -> None:
    """``model`` (of ``model_key``, e.g. ``teacher.model.name=resnet56``) with the weights at
    ``path`` (config ``key``); a ConfigError that names the fix when they do not fit."""
    state = read_state_dict(path, key)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise ConfigError(
            f"{key}={path} does not fit {model_key} with {info.num_classes} classes and "
            f"{info.in_chans} input channels: "
            f"{mismatch_hint(model, state, path, model_key, info)}") from None


def mismatch_hint(model: nn.Module, state: dict[str, torch.Tensor], path: Path,
                  model_key: str, info: DataInfo) -> str:
    """What to set when ``state`` does not fit ``model``: the architecture the file says it
    holds, else the one (of the CIFAR architectures) whose tensors it has, else which of its
    tensors differ from the configured model's."""
    setting, _, configured = model_key.partition("=")
    stored = stored_architecture(path)
    found = (stored[0], f"{stored[1]} says so") if stored else None
    if found is None:
        name = weights_architecture(state, info)
        found = (name, "its tensors match one") if name else None
    if found and found[0] != configured:
        return f"it holds a {found[0]} ({found[1]}): set {setting}={found[0]}"
    expected = model.state_dict()
    name = next((n for n in expected if n in state and expected[n].shape != state[n].shape),
                None)
    if set(state) == set(expected) and name:  # the architecture, for other data or widths
        return (f"it is a {configured} for other data or widths ({name} is "
                f"{tuple(state[name].shape)}, here {tuple(expected[name].shape)}): use the data "
                "it was trained on, or the model settings it was trained with")
    return (f"the checkpoint is not a {configured}: set {setting} to the model it was "
            "trained as")


def weights_architecture(state: dict[str, torch.Tensor], info: DataInfo) -> str | None:
    """The CIFAR architecture whose tensors (names and shapes, for ``info``'s classes and
    channels) ``state`` has, if one has them (built on the meta device: no memory, ~1 s)."""
    import timm

    if info.is_text:
        return None
    shapes = {name: tuple(tensor.shape) for name, tensor in state.items()}
    for name in CIFAR_MODEL_NAMES:
        with torch.device("meta"):
            candidate = timm.create_model(name, num_classes=info.num_classes,
                                          in_chans=info.in_chans)
        if {n: tuple(t.shape) for n, t in candidate.state_dict().items()} == shapes:
            return name
    return None


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
                 model_key: str, info: DataInfo, train: TrainRun
                 ) -> tuple[nn.Module, dict[str, Any]]:
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
        role = "dense model" if key == "prune.dense" else "teacher"  # (the same cache)
        entry, status = ensure_cached(teacher_run_config(cfg, spec, model_cfg), train, role)
        path = entry / WEIGHTS_NAME
        cached = cached_record(entry)
        source = {"kind": "cache", "cache": status, "key": entry.name, "path": str(path),
                  "run_dir": cached["run_dir"], "metrics": cached["metrics"]}
    source["model"] = model_cfg.name
    check_class_names(path, info, f"{key}.checkpoint" if spec.checkpoint else key)
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


def resolve_teachers(cfg: DictConfig, info: DataInfo, train: TrainRun) -> list[Teacher]:
    """Every teacher of a distillation run (``teacher`` then ``extra_teachers``), loaded."""
    teachers = []
    specs = [("teacher", cfg.teacher)] + [
        (f"extra_teachers[{i}]", spec) for i, spec in enumerate(cfg.extra_teachers)]
    for key, spec in specs:
        model, source = load_trained(cfg, key, spec, spec.model, f"{key}.model", info, train)
        teachers.append(Teacher(model=model, weight=spec.weight, source=source))
    total = sum(t.weight for t in teachers)
    for teacher in teachers:
        teacher.weight /= total
    return teachers
