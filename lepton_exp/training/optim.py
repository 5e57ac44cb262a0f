"""Optimizers and learning-rate schedules from config (plain functions, no Lightning)."""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, MultiStepLR


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    if cfg.name in ("adamw", "adam"):
        cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
        return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas))
    raise ValueError(f"unknown optimizer '{cfg.name}'")


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


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, max_epochs: int,
                    steps_per_epoch: int) -> dict | None:
    """A Lightning ``lr_scheduler`` dict (scheduler + interval), or None for a constant lr."""
    if cfg.name == "constant":
        return None
    if cfg.name == "multistep":
        scheduler: LRScheduler = MultiStepLR(
            optimizer, milestones=milestone_epochs(cfg.milestones, max_epochs), gamma=cfg.gamma)
        return {"scheduler": scheduler, "interval": "epoch"}
    if cfg.name == "cosine":
        base_lr = optimizer.param_groups[0]["lr"]
        total = max(1, max_epochs * steps_per_epoch)
        warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
        min_ratio = cfg.min_lr / base_lr
        scheduler = LambdaLR(optimizer, lambda step: cosine_factor(step, total, warmup, min_ratio))
        return {"scheduler": scheduler, "interval": "step"}
    raise ValueError(f"unknown scheduler '{cfg.name}'")
