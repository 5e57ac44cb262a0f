"""The total student loss: alpha * cross-entropy + sum of weighted distillation terms.

``alpha`` weights the hard-label cross-entropy. A logit term without an explicit weight
(kd) gets ``1 - alpha`` (Hinton's mix); feature terms carry their own weight (FitNet 100,
AT 1000). Temperature and alpha may follow a schedule over training, and all distillation
weights may ramp up over a warm-up (DKD). Every piece is logged: ``loss_<term>``,
``weight_<term>``, ``loss_ce``, ``weight_ce``, ``temperature``.

Regression data (one real-valued output, GLUE STS-B): the hard-label loss is the mean
squared error (logged as ``loss_mse``, ``weight_mse``) and kd matches the teacher's
predictions by MSE; terms built on class distributions refuse such data (one line).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lepton_exp.distill.base import DistillTerm, TermInputs
from lepton_exp.distill.layers import check_maps, resolve_pairs
from lepton_exp.distill.registry import build_term
from lepton_exp.distill.schedules import scheduled, warmup_factor
from lepton_exp.errors import ConfigError
from lepton_exp.models.taps import Taps


def label_loss(logits: torch.Tensor, labels: torch.Tensor,
               regression: bool = False) -> torch.Tensor:
    """The loss against the data's labels: cross-entropy, or for regression data (N x 1
    outputs, float targets) the mean squared error."""
    if regression:
        # in float32: mixed precision would round the targets (4.8 -> 4.8008 in fp16)
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits, labels)


def tap_count(taps: Taps, kind: str) -> int:
    """Taps a term can pair: features (0 = stem/embeddings), or attention maps numbered like
    the hidden states (1..L; there is no attention at 0)."""
    if kind == "features":
        return len(taps.features)
    return len(getattr(taps, kind)) + 1


class DistillationObjective(nn.Module):
    def __init__(self, terms: dict[str, DistillTerm], weights: dict[str, Optional[float]], *,
                 alpha: float, temperature: float, schedule: str = "constant",
                 alpha_final: Optional[float] = None,
                 temperature_final: Optional[float] = None, warmup_epochs: float = 0.0,
                 regression: bool = False):
        super().__init__()
        if regression:
            for name, term in terms.items():
                why = term.regression_problem()
                if why:
                    raise ConfigError(f"distill.terms.{name} does not apply to regression "
                                      f"data (one real-valued output, e.g. GLUE STS-B): {why}")
        self.regression = regression
        self.label_name = "mse" if regression else "ce"  # the hard-label term, in the logs
        self.terms = nn.ModuleDict(terms)
        self.weights = weights
        self.alpha, self.alpha_final = alpha, alpha_final
        self.temperature, self.temperature_final = temperature, temperature_final
        self.schedule = schedule
        self.warmup_epochs = warmup_epochs
        self.teacher_feature_count = 0  # set by bind()
        self.set_horizon(total_steps=1, steps_per_epoch=1)

    def set_horizon(self, total_steps: int, steps_per_epoch: int) -> None:
        """Length of training in optimiser steps, which schedules and the warm-up follow."""
        self.total_steps = max(1, total_steps)
        self.warmup_steps = self.warmup_epochs * max(1, steps_per_epoch)

    @property
    def constant(self) -> bool:
        """Whether the weights and the temperature stay as configured (no schedule, no
        warm-up)."""
        return self.schedule == "constant" and not self.warmup_epochs

    @property
    def needs(self) -> set[str]:
        return {kind for term in self.terms.values() for kind in term.taps_read()}

    @property
    def needs_indices(self) -> bool:
        return any(term.needs_indices for term in self.terms.values())

    def teacher_taps_read(self) -> dict[str, set[int]]:
        """The teacher taps the terms read (what the teacher-output cache must keep):
        feature/preact tap indices by kind; ``embedding`` (index 0) when read."""
        read: dict[str, set[int]] = {}
        for term in self.terms.values():
            for kind in term.taps_read() & {"features", "preact"}:
                # terms that pair taps read their pairs; others (ReviewKD) read every stage
                taps = ({t for _, t in term.pairs} if term.pairs_over() and kind == term.needs
                        else set(range(self.teacher_feature_count)))
                read.setdefault(kind, set()).update(taps)
            if "embedding" in term.taps_read():
                read["embedding"] = {0}
        return read

    def bind(self, student: Taps, teacher: Taps, layers: dict) -> None:
        """Pair taps and build connectors from one dry forward pass of both models."""
        self.teacher_feature_count = len(teacher.features)
        for name, term in self.terms.items():
            kind = term.pairs_over()
            if kind is None:
                if "embedding" in term.taps_read() and (student.embedding is None
                                                         or teacher.embedding is None):
                    raise ConfigError(f"distill term {name} reads the models' embeddings (the "
                                      "classifier's input), which these models do not expose")
                term.bind(student, teacher, [])
                continue
            if kind != "features" and not getattr(student, kind):
                raise ConfigError(f"distill term {name} needs attention maps, which only "
                                  "transformers have: use at or fitnet for CNNs")
            spec = term.layers_spec or layers
            where = f"distill.terms.{name}.layers" if term.layers_spec else "distill.layers"
            if term.needs == "preact":  # pre-ReLU maps: CNNs only
                check_maps(name, student, teacher, [], where)
            pairs = resolve_pairs(spec.get("student", "auto"), spec.get("teacher", "auto"),
                                  tap_count(student, kind), tap_count(teacher, kind), where)
            term.layers_key = where
            term.bind(student, teacher, pairs)

    def values(self, step: int) -> dict[str, float]:
        progress = step / max(1, self.total_steps - 1)
        return {
            "alpha": scheduled(self.alpha, self.alpha_final, self.schedule, progress),
            "temperature": scheduled(self.temperature, self.temperature_final, self.schedule,
                                     progress),
            "warmup": warmup_factor(step, self.warmup_steps),
        }

    def forward(self, student: Taps, teachers: Sequence[Taps], labels: torch.Tensor,
                step: int, teacher_weights: Sequence[float],
                indices: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
        values = self.values(step)
        alpha = values["alpha"]
        inputs = TermInputs(labels, values["temperature"], teacher_weights, self.regression,
                            indices=indices, step=step)
        loss_label = label_loss(student.logits, labels, self.regression)
        total = alpha * loss_label
        logs = {f"loss_{self.label_name}": loss_label.detach(),
                f"weight_{self.label_name}": alpha, "temperature": values["temperature"]}
        for name, term in self.terms.items():
            weight = self.weights[name]
            weight = (1.0 - alpha if weight is None else weight) * values["warmup"]
            value = term(student, teachers, inputs)
            total = total + weight * value
            logs[f"loss_{name}"] = value.detach()
            logs[f"weight_{name}"] = weight
        logs["loss"] = total.detach()
        return total, logs


def build_objective(distill_cfg, regression: bool = False) -> DistillationObjective:
    """``distill``'s objective; ``regression``: for regression data (see the module doc)."""
    terms, weights = {}, {}
    for name, options in (distill_cfg.terms or {}).items():
        terms[name], weights[name] = build_term(name, options)
    schedule = distill_cfg.schedule
    return DistillationObjective(
        terms, weights, alpha=distill_cfg.alpha, temperature=distill_cfg.temperature,
        schedule=schedule.name, alpha_final=schedule.alpha_final,
        temperature_final=schedule.temperature_final,
        warmup_epochs=distill_cfg.warmup_epochs, regression=regression)
