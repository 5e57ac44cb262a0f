"""Names derived from a config: the default run name, the default stage, the method label."""

from __future__ import annotations

from typing import Any

from lepton_exp.config.registries import NONE, STAGES


def method_label(terms: Any) -> str:
    """The distillation method as one name (W&B config and tags, result tables): the term
    names sorted and joined, ``at+kd`` for {kd, at} in any order; ``none`` without terms."""
    return "+".join(sorted(terms)) if terms else "none"


def run_name(stage: str, model: str, data: str, terms: Any, prune: Any = None,
             sparsity: Any = None, quant: Any = "none") -> str:
    """Default run name, the stage's (`distill-kd+at-resnet8-cifar10`,
    `teacher-resnet20-cifar10`, `prune-magnitude0.5+kd-resnet8-digits`); quantized runs end
    in `-<quant method>`."""
    distilled = "+".join(terms) if terms else "none"
    suffix = "" if quant in (None, NONE) else f"-{quant}"
    if stage not in STAGES:  # a pipeline (named by its preset), or a typo validation reports
        return f"{stage}-{model}-{data}{suffix}"
    name = STAGES.attribute(stage, "STAGE").run_name(model, data, distilled, prune, sparsity)
    return f"{name}{suffix}"


def stage_for(terms: Any, prune: Any = "none") -> str:
    """Default stage: `prune` when a prune method is chosen, `distill` when a distillation
    term is (prune + distill: finetuning with distillation), else `teacher`."""
    if prune not in (None, NONE):
        return "prune"
    return "distill" if terms else "teacher"
