"""How temperature, alpha and the distillation weights move over training (pure functions)."""

from __future__ import annotations

import math

SCHEDULES = ("constant", "linear", "cosine")


def scheduled(start: float, final: float | None, kind: str, progress: float) -> float:
    """The value at ``progress`` in [0, 1] going from ``start`` to ``final`` (None: constant)."""
    if final is None or kind == "constant":
        return start
    progress = min(max(progress, 0.0), 1.0)
    if kind == "linear":
        return start + (final - start) * progress
    if kind == "cosine":
        return final + (start - final) * (1.0 + math.cos(math.pi * progress)) / 2.0
    raise ValueError(f"unknown schedule '{kind}': use one of {', '.join(SCHEDULES)}")


def warmup_factor(step: int, warmup_steps: float) -> float:
    """Linear ramp of the distillation terms from 0 to 1 over ``warmup_steps`` (DKD's warm-up)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)
