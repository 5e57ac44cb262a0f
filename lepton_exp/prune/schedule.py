"""Gradual pruning's sparsity over training (Zhu & Gupta, 2017, Eq. 1)."""

from __future__ import annotations


def cubic_sparsity(step: int, initial: float, final: float, begin_step: int,
                   end_step: int) -> float:
    """s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_end - t_0))^3 between begin and end;
    s_i before, s_f after: fast pruning early, when the network has most redundancy."""
    if step <= begin_step:
        return initial
    if step >= end_step:
        return final
    progress = (step - begin_step) / (end_step - begin_step)
    return final + (initial - final) * (1.0 - progress) ** 3
