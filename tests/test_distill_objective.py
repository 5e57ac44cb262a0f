"""The total loss without Lightning: term weighting, schedules, tap pairing, connectors,
registry errors, and where gradients go."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from lepton_exp.distill import kd_loss
from lepton_exp.distill.layers import resolve_pairs, uniform_taps
from lepton_exp.distill.objective import DistillationObjective, build_objective
from lepton_exp.distill.registry import build_term, check_options, method_names
from lepton_exp.distill.schedules import scheduled, warmup_factor
from lepton_exp.errors import ConfigError
from lepton_exp.models.taps import Tapper, Taps


def distill_cfg(**overrides):
    base = {"terms": {}, "temperature": 4.0, "alpha": 1.0,
            "layers": {"student": "auto", "teacher": "auto"},
            "schedule": {"name": "constant", "temperature_final": None, "alpha_final": None},
            "warmup_epochs": 0.0}
    return OmegaConf.merge(base, overrides)


def test_registry_lists_one_method_per_file():
    assert {"kd", "dkd", "fitnet", "at"} <= set(method_names())


def test_unknown_terms_and_options_are_one_line_errors_with_a_suggestion():
    assert "did you mean 'fitnet'" in check_options("fitnett", {})
    problem = check_options("kd", {"hardd": True})
    assert "unknown option distill.terms.kd.hardd" in problem and "'hard'" in problem
    with pytest.raises(ConfigError, match="unknown distillation term 'kdd'"):
        build_term("kdd", {})


def test_kd_weight_defaults_to_one_minus_alpha_and_ce_gets_alpha():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    labels = torch.tensor([0, 1, 2, 3])
    objective = build_objective(distill_cfg(terms={"kd": {"weight": None}}, alpha=0.1))
    loss, logs = objective(Taps(student), [Taps(teacher)], labels, step=0,
                           teacher_weights=[1.0])
    expected = 0.1 * F.cross_entropy(student, labels) + 0.9 * kd_loss(student, teacher, 4.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert logs["weight_ce"] == pytest.approx(0.1) and logs["weight_kd"] == pytest.approx(0.9)
    assert logs["temperature"] == 4.0
    assert logs["loss_kd"].item() == pytest.approx(kd_loss(student, teacher, 4.0).item())


def test_explicit_weights_add_to_the_full_cross_entropy():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 4), torch.randn(3, 4)
    labels = torch.tensor([0, 1, 2])
    objective = build_objective(distill_cfg(terms={"kd": {"weight": 2.0, "hard": True}}))
    loss, logs = objective(Taps(student), [Taps(teacher)], labels, 0, [1.0])
    hard = F.cross_entropy(student, teacher.argmax(1))
    assert loss.item() == pytest.approx((F.cross_entropy(student, labels) + 2 * hard).item())
    assert logs["weight_kd"] == 2.0


@pytest.mark.parametrize("kind,halfway", [("constant", 4.0), ("linear", 2.5),
                                          ("cosine", 2.5)])
def test_schedules_go_from_start_to_final(kind, halfway):
    assert scheduled(4.0, 1.0, kind, 0.0) == 4.0
    assert scheduled(4.0, 1.0, kind, 0.5) == pytest.approx(halfway)
    assert scheduled(4.0, 1.0, kind, 1.0) == (4.0 if kind == "constant" else 1.0)
    assert scheduled(4.0, None, kind, 0.7) == 4.0  # no final value: constant


def test_cosine_schedule_is_slow_at_both_ends():
    quarter = scheduled(1.0, 0.0, "cosine", 0.25)
    assert quarter == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert quarter > scheduled(1.0, 0.0, "linear", 0.25)


def test_objective_follows_its_schedules_over_the_training_horizon():
    objective = build_objective(distill_cfg(
        terms={"kd": {"weight": None}}, alpha=0.5, warmup_epochs=2.0,
        schedule={"name": "linear", "temperature_final": 1.0, "alpha_final": 0.1}))
    objective.set_horizon(total_steps=101, steps_per_epoch=10)
    start, middle, end = (objective.values(step) for step in (0, 50, 100))
    assert (start["temperature"], middle["temperature"], end["temperature"]) == pytest.approx(
        (4.0, 2.5, 1.0))
    assert (start["alpha"], end["alpha"]) == pytest.approx((0.5, 0.1))
    assert start["warmup"] == pytest.approx(1 / 20) and middle["warmup"] == 1.0
    student, teacher = torch.randn(2, 3), torch.randn(2, 3)
    _, logs = objective(Taps(student), [Taps(teacher)], torch.tensor([0, 1]), 100, [1.0])
    assert logs["weight_kd"] == pytest.approx(0.9)  # 1 - alpha at the end
    assert logs["temperature"] == pytest.approx(1.0)


def test_warmup_ramps_linearly_to_one():
    assert [warmup_factor(step, 4) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_auto_pairs_map_stages_uniformly_without_the_stem():
    assert uniform_taps(4, 3) == [1, 2, 3]
    assert resolve_pairs("auto", "auto", 4, 4, "distill.layers") == [(1, 1), (2, 2), (3, 3)]
    # A 5-tap student (timm resnet) and a 4-tap teacher: three pairs, last to last.
    assert resolve_pairs("auto", "auto", 5, 4, "distill.layers") == [(1, 1), (3, 2), (4, 3)]
    assert resolve_pairs([2], "auto", 4, 7, "distill.layers") == [(2, 6)]


def test_pairs_that_cannot_match_are_clear_errors():
    with pytest.raises(ConfigError, match=r"the student has taps 0\.\.3"):
        resolve_pairs([1, 5], [1, 2], 4, 4, "distill.layers")
    with pytest.raises(ConfigError, match="same length"):
        resolve_pairs([1, 2], [1], 4, 4, "distill.layers")


def _cnn_pair():
    torch.manual_seed(0)
    student = timm.create_model("resnet8", num_classes=10)
    teacher = timm.create_model("resnet8x4", num_classes=10).requires_grad_(False).eval()
    return student, teacher


def _bound(terms: dict, student, teacher, **cfg):
    objective = build_objective(distill_cfg(terms=terms, **cfg))
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        student.eval()
        objective.bind(Tapper(student)(images), Tapper(teacher)(images),
                       OmegaConf.create(cfg.get("layers", {"student": "auto",
                                                           "teacher": "auto"})))
        student.train()
    return objective, images


def test_fitnet_connectors_are_built_from_the_shapes_of_a_dry_forward():
    student, teacher = _cnn_pair()
    objective, _ = _bound({"fitnet": {"weight": 100}}, student, teacher,
                          layers={"student": [1, 3], "teacher": [1, 3]})
    connectors = objective.terms["fitnet"].connectors
    assert [(c[0].in_channels, c[0].out_channels) for c in connectors] == [(16, 64), (64, 256)]
    assert isinstance(connectors[0][1], torch.nn.BatchNorm2d)


def test_maps_paired_with_vectors_name_both_shapes():
    from lepton_exp.distill.layers import connector_for

    with pytest.raises(ConfigError, match=r"student tap 2 \(32x8x8\) to teacher tap 1 \(64\)"):
        connector_for("fitnet", 2, 1, torch.zeros(1, 32, 8, 8), torch.zeros(1, 64))


def test_gradients_reach_only_the_student_and_the_connectors():
    student, teacher = _cnn_pair()
    objective, images = _bound({"kd": {"weight": None}, "fitnet": {"weight": 100},
                                "at": {"weight": 1000}}, student, teacher, alpha=0.1)
    student_tapper, teacher_tapper = Tapper(student), Tapper(teacher)
    with torch.no_grad():
        teacher_taps = teacher_tapper(images)
    loss, logs = objective(student_tapper(images), [teacher_taps], torch.tensor([0, 1, 2, 3]),
                           0, [1.0])
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    connector_params = list(objective.parameters())
    assert connector_params and all(p.grad is not None for p in connector_params)
    assert {"loss_ce", "loss_kd", "loss_fitnet", "loss_at", "weight_fitnet",
            "weight_at"} <= set(logs)


def test_objective_with_a_student_equal_to_the_teacher_has_zero_distillation_loss():
    torch.manual_seed(0)
    model = timm.create_model("resnet8", num_classes=10).eval()
    objective = build_objective(distill_cfg(terms={"kd": {}, "at": {"weight": 1000},
                                                   "dkd": {}}, alpha=0.5))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        taps = Tapper(model)(images)
        objective.bind(taps, taps, OmegaConf.create({"student": "auto", "teacher": "auto"}))
        _, logs = objective(taps, [taps], torch.tensor([1, 2]), 0, [1.0])
    for name in ("loss_kd", "loss_at", "loss_dkd"):
        assert logs[name].item() == pytest.approx(0.0, abs=1e-5), name


def test_no_terms_is_plain_cross_entropy():
    objective = DistillationObjective({}, {}, alpha=1.0, temperature=4.0)
    logits, labels = torch.randn(3, 4), torch.tensor([0, 1, 2])
    loss, logs = objective(Taps(logits), [], labels, 0, [])
    assert loss.item() == pytest.approx(F.cross_entropy(logits, labels).item())
    assert set(logs) == {"loss", "loss_ce", "weight_ce", "temperature"}


@pytest.mark.parametrize("options", ["[kd,dkd]", "[dkd,kd]", "[kd,at]", "[at,kd]",
                                     "[fitnet,kd]"])
def test_combined_options_get_the_same_mix_whatever_their_order(compose_cfg, options):
    cfg = compose_cfg(f"distill={options}")
    assert cfg.distill.alpha == 0.1 and cfg.distill.temperature == 4.0
    assert cfg.distill.layers.student == "auto"  # fitnet's hint tap stays on fitnet
