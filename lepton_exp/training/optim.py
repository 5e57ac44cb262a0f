"""Optimizers and learning-rate schedules by name (plain functions, no Lightning).

The registries below are the single list of valid names: config validation reads them,
which is why torch is imported inside the builders (validation runs before torch loads).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    import torch


def _sgd(params: list, cfg, fused: bool) -> "torch.optim.Optimizer":
    import torch

    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, nesterov=cfg.nesterov,
                           **({"fused": True} if fused else {}))


def _adam(decoupled: bool) -> Callable:
    def build(params: list, cfg, fused: bool) -> "torch.optim.Optimizer":
        import torch

        cls = torch.optim.AdamW if decoupled else torch.optim.Adam
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas),
                   **({"fused": True} if fused else {}))

    return build


OPTIMIZERS: dict[str, Callable[[list, Any, bool], "torch.optim.Optimizer"]] = {
    "sgd": _sgd, "adamw": _adam(decoupled=True), "adam": _adam(decoupled=False)}


def build_optimizer(params: Iterable, cfg) -> "torch.optim.Optimizer":
    """The optimiser ``cfg.name`` over ``params`` (tensors or parameter groups), with fused
    kernels where ``optim.fused`` asks for them (null: on CUDA)."""
    from lepton_exp.training.speed import fused_optimizer

    params = list(params)
    tensors = [p for item in params
               for p in (item["params"] if isinstance(item, dict) else [item])]
    return OPTIMIZERS[cfg.name](params, cfg, fused_optimizer(cfg.get("fused"), tensors))


def milestone_epochs(milestones: Iterable[float], max_epochs: int) -> list[int]:
    """Fractions of the run -> epoch indices (0.625 of 240 -> 150), deduplicated, in order."""
    return sorted({max(1, round(fraction * max_epochs)) for fraction in milestones})


def cosine_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """lr multiplier at `step`: linear warm-up to 1, then cosine decay to `min_ratio`."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _multistep(optimizer, cfg, max_epochs: int, steps_per_epoch: int) -> dict:
    from torch.optim.lr_scheduler import MultiStepLR

    milestones = milestone_epochs(cfg.milestones, max_epochs)
    return {"scheduler": MultiStepLR(optimizer, milestones=milestones, gamma=cfg.gamma),
            "interval": "epoch"}


def _cosine(optimizer, cfg, max_epochs: int, steps_per_epoch: int) -> dict:
    from torch.optim.lr_scheduler import LambdaLR

    total = max(1, max_epochs * steps_per_epoch)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    min_ratio = cfg.min_lr / optimizer.param_groups[0]["lr"]
    schedule = LambdaLR(optimizer, lambda step: cosine_factor(step, total, warmup, min_ratio))
    return {"scheduler": schedule, "interval": "step"}


SCHEDULERS: dict[str, Callable[..., dict | None]] = {
    "multistep": _multistep, "cosine": _cosine, "constant": lambda *args: None}


def build_scheduler(optimizer, cfg, max_epochs: int, steps_per_epoch: int) -> dict | None:
    """A Lightning ``lr_scheduler`` dict (scheduler + interval), or None for a constant lr."""
    return SCHEDULERS[cfg.name](optimizer, cfg, max_epochs, steps_per_epoch)
