"""Checkpoint files that a config names (``teacher.checkpoint``, ``extra_teachers[i]``'s,
``prune.dense.checkpoint``), looked at without loading them: whether the file can be one
at all, and which architecture it holds where it says so. The CLI's preflight checks them
before a run directory exists; the loaders use the same words when loading fails.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any, Iterator, Optional

from omegaconf import DictConfig, OmegaConf

from lepton_exp.config import RECORD_NAME
from lepton_exp.config.checks import PIPELINE
from lepton_exp.config.registries import NONE
from lepton_exp.errors import one_line

ARCHITECTURE = "architecture"  # safetensors metadata: the timm name (models.save_weights)
STEP_REFERENCE = "step:"  # a pipeline step's export (app.pipeline): there once the step ran
GIVE = ("give a lepton-exp run's model.safetensors or checkpoints/last.ckpt, or a state dict "
        "saved with torch.save")
_ZIP = b"PK\x03\x04"  # torch.save's format (a zip archive): .pt, .pth, Lightning's .ckpt
_LEGACY = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # torch.save before 1.6: its magic


def missing(key: str, path: Any) -> str:
    return f"{key}={path} does not exist: {GIVE} (or leave {key} unset to train and cache it)"


def unreadable(path: Path, error: Optional[BaseException] = None) -> Optional[str]:
    """What ``path`` is, in words, when it cannot be a checkpoint; None when it looks like
    one. ``error``: what loading it raised, for a file that looks right and did not load."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_LEGACY))
    except OSError as problem:
        return f"cannot be opened ({one_line(problem)})"
    if not head:
        return "is an empty file"
    if path.suffix == ".safetensors":
        return None if _safetensors_metadata(path) is not None else (
            "is not a safetensors file, or one cut short")
    if not head.startswith((_ZIP, _LEGACY)):
        return ("is not a checkpoint (neither torch.save's format, which .pt, .pth and "
                "Lightning's .ckpt files have, nor safetensors)")
    if head.startswith(_ZIP) and not zipfile.is_zipfile(path):  # its end is missing
        return "is a damaged or incomplete torch.save file (cut short while copied or saved?)"
    if error is None:
        return None
    if isinstance(error, pickle.UnpicklingError):  # weights_only refused what it holds
        return "holds Python objects besides tensors (a whole pickled model?)"
    return "is a damaged or incomplete torch.save file (cut short while copied or saved?)"


def _safetensors_metadata(path: Path) -> Optional[dict[str, str]]:
    """The metadata of a whole safetensors file ({} when it has none); None when the file
    is not one, or is cut short (its header's tensors must cover the file)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            return handle.metadata() or {}
    except Exception:  # noqa: BLE001 - SafetensorError, a header that is not JSON, ...
        return None


def stored_architecture(path: Path) -> Optional[tuple[str, str]]:
    """(architecture, what says so) of a checkpoint that names the model it holds: the
    metadata of a lepton-exp export, or the run record beside a run's checkpoints/*.ckpt."""
    if path.suffix == ".safetensors":
        name = (_safetensors_metadata(path) or {}).get(ARCHITECTURE)
        return (name, "its metadata") if name else None
    record = path.parent.parent / RECORD_NAME
    if path.parent.name != "checkpoints" or not record.is_file():
        return None
    try:
        name = json.loads(record.read_text())["config"]["model"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (str(name), f"its run's {RECORD_NAME}") if name else None


def _read_by(cfg: DictConfig) -> Iterator[tuple[str, DictConfig, str]]:
    """(config key, spec, key of its model) of every checkpoint-holding spec the run loads:
    the teachers when it distils (or starts from one), the dense model when it prunes."""
    pipeline = cfg.stage == PIPELINE
    if pipeline or cfg.distill.terms or cfg.distill.student_init == "teacher":
        yield "teacher", cfg.teacher, "teacher.model"
        for index, spec in enumerate(cfg.extra_teachers):
            yield f"extra_teachers[{index}]", spec, f"extra_teachers[{index}].model"
    if pipeline or cfg.prune.method != NONE:
        yield "prune.dense", cfg.prune.dense, "model"


def checkpoint_problem(cfg: DictConfig) -> Optional[str]:
    """The first checkpoint named by ``cfg`` that cannot serve: missing, not a checkpoint,
    or saying it holds another architecture than the config's; one line with the fix."""
    for key, spec, model_key in _read_by(cfg):
        value = spec.checkpoint
        if not value or str(value).startswith(STEP_REFERENCE):
            continue
        path = Path(str(value)).expanduser()
        if path.is_dir():
            return f"{key}.checkpoint={value} is a directory: {GIVE}"
        if not path.is_file():
            return missing(f"{key}.checkpoint", value)
        problem = unreadable(path)
        if problem:
            return f"{key}.checkpoint={value} {problem}: {GIVE}"
        expected = str(OmegaConf.select(cfg, f"{model_key}.name"))
        stored = stored_architecture(path)
        if stored and stored[0] != expected.split(".")[0]:  # (timm names may carry a tag)
            return (f"{key}.checkpoint={value} holds a {stored[0]} ({stored[1]} says so), not "
                    f"a {expected}: set {model_key}.name={stored[0]}")
    return None
