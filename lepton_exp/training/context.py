"""What the runner hands a stage's training code, and what that code hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lepton_exp.teachers import TrainRun

if TYPE_CHECKING:  # keeps this importable without torch (stage listing, config checks)
    from torch import nn

__all__ = ["StageContext", "StageOutput", "TrainRun"]


@dataclass
class StageContext:
    cfg: Any
    run_dir: Path
    datamodule: Any
    loggers: list
    prepared: Any = None  # what the stage's prepare step returned (e.g. loaded teachers)
    resume_from: Path | None = None  # last checkpoint of this run's unfinished earlier attempt


@dataclass
class StageOutput:
    model: "nn.Module"  # the trained model whose size and parameters are recorded
    metrics: dict[str, float]
    checkpoints: dict[str, str | None] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific run-record fields
    # safetensors metadata of the exported model (e.g. how to rebuild a pruned one)
    export_metadata: dict[str, str] | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # more W&B summary entries (nested)
    teachers: list = field(default_factory=list)  # the model was trained against (QAT reuses)
