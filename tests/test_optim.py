from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from lepton_exp.config.schemas import OptimConfig, SchedulerConfig
from lepton_exp.training.optim import (
    build_optimizer,
    build_scheduler,
    cosine_factor,
    milestone_epochs,
)


def _sgd(lr=0.1):
    return build_optimizer([torch.nn.Parameter(torch.zeros(1))],
                           OmegaConf.structured(OptimConfig(name="sgd", lr=lr)))


def test_milestones_are_fractions_of_the_run():
    assert milestone_epochs([0.625, 0.75, 0.875], 240) == [150, 180, 210]
    assert milestone_epochs([0.5, 0.5001], 10) == [5]


def test_multistep_decays_at_the_milestone_epochs():
    optimizer = _sgd(0.1)
    cfg = OmegaConf.structured(SchedulerConfig(name="multistep", milestones=[0.5, 0.75], gamma=0.1))
    scheduler = build_scheduler(optimizer, cfg, max_epochs=8, steps_per_epoch=3)
    assert scheduler["interval"] == "epoch"
    lrs = []
    for _ in range(8):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler["scheduler"].step()
    assert lrs == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2)


def test_cosine_with_warmup_follows_its_formula():
    assert cosine_factor(0, 100, 10, 0.0) == pytest.approx(0.1)
    assert cosine_factor(9, 100, 10, 0.0) == pytest.approx(1.0)
    assert cosine_factor(10, 100, 10, 0.0) == pytest.approx(1.0)
    assert cosine_factor(55, 100, 10, 0.0) == pytest.approx(0.5)
    assert cosine_factor(100, 100, 10, 0.2) == pytest.approx(0.2)
    middle = 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert cosine_factor(32, 100, 10, 0.2) == pytest.approx(middle, rel=1e-2)


def test_cosine_scheduler_steps_per_batch_and_reaches_min_lr():
    optimizer = _sgd(0.1)
    cfg = OmegaConf.structured(SchedulerConfig(name="cosine", min_lr=0.001))
    scheduler = build_scheduler(optimizer, cfg, max_epochs=2, steps_per_epoch=5)
    assert scheduler["interval"] == "step"
    for _ in range(10):
        optimizer.step()
        scheduler["scheduler"].step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001)


def test_adamw_and_constant():
    cfg = OmegaConf.structured(OptimConfig(name="adamw", lr=1e-3, weight_decay=0.05))
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["weight_decay"] == 0.05
    constant = OmegaConf.structured(SchedulerConfig(name="constant"))
    assert build_scheduler(optimizer, constant, 3, 3) is None
