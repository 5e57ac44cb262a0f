"""Beyond the CRD table: OFD and ReviewKD (mdistiller's implementations) and the CRD code's
``convreg`` FitNet connector. Each loss equals its formula on small hand-computable tensors,
is zero when the student equals the teacher, sends gradients only to the student and the
method's own modules; the terms bind to real CIFAR models and run end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

import lepton_exp.models.families.cifar_resnet  # noqa: F401  (registers the CIFAR models)
from lepton_exp.app.run import run
from lepton_exp.distill import hcl_loss, ofd_loss
from lepton_exp.distill.layers import convreg_connector
from lepton_exp.distill.methods import fitnet, ofd, reviewkd
from lepton_exp.distill.methods.ofd import gaussian_margin
from lepton_exp.errors import ConfigError
from lepton_exp.models.taps import Tapper, Taps, feature_entries

PAIRS = [(1, 1), (2, 2), (3, 3)]  # every stage after the stem (the auto pairing)


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=10)


def _taps(model: nn.Module, inputs: torch.Tensor) -> Taps:
    tapper = Tapper(model, preact=True, embedding=True)
    try:
        return tapper(inputs)
    finally:
        tapper.remove()


@pytest.fixture(scope="module")
def pair():
    """resnet8 <- resnet14 on a batch of 8x8 images (digits' size), both in eval mode."""
    student, teacher = _model("resnet8").eval(), _model("resnet14").eval()
    inputs = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return student, teacher, inputs, _taps(student, inputs), _taps(teacher, inputs)


# ---------------------------------------------------------------------------------- OFD
def test_ofd_loss_is_the_partial_l2_with_the_margin():
    # Channel 0 has margin -1, channel 1 margin -0.1; one sample, four positions each.
    teacher = torch.tensor([[[[-2.0, -0.5, 0.5, 1.0]], [[-2.0, -0.05, -2.0, 0.0]]]])
    student = torch.tensor([[[[-3.0, 0.0, 1.0, 0.0]], [[0.0, -0.5, -0.2, 0.3]]]])
    margin = torch.tensor([-1.0, -0.1])
    # Channel 0: below both the margin -> 0; (0 - -0.5)² = 0.25; (1 - 0.5)² = 0.25; (0 - 1)² = 1.
    # Channel 1: target raised to -0.1: (0 + 0.1)² = 0.01; student below a non-positive target
    # -> 0; -0.2 below the raised target -0.1 -> 0; target 0 and student above: 0.3² = 0.09.
    expected = 0.25 + 0.25 + 1.0 + 0.01 + 0.09
    assert ofd_loss(student, teacher, margin).item() == pytest.approx(expected)
    # summed over channels and positions, averaged over the batch
    doubled = ofd_loss(torch.cat([student, student]), torch.cat([teacher, teacher]), margin)
    assert doubled.item() == pytest.approx(expected)


def test_ofd_loss_is_zero_when_the_student_matches_or_is_cut_like_the_teacher():
    teacher = torch.randn(3, 4, 5, 5)
    margin = torch.full((4,), -0.5)
    assert ofd_loss(teacher, teacher, margin).item() == 0.0
    # wherever the teacher is below its margin, any student response below it is as good
    below = teacher < -0.5
    student = torch.where(below, teacher - 10.0, teacher)
    assert below.any() and ofd_loss(student, teacher, margin).item() == 0.0
    # ... but one above the margin is not
    student = torch.where(below, torch.zeros_like(teacher), teacher)
    assert ofd_loss(student, teacher, margin).item() > 0.0


def test_gaussian_margin_is_the_mean_of_the_negative_part():
    # N(0, 1): E[x | x < 0] = -phi(0) / 0.5 = -sqrt(2 / pi)
    margin = gaussian_margin(torch.tensor([0.0, 1.0, 5.0]), torch.tensor([1.0, -2.0, 1.0]))
    assert margin[0].item() == pytest.approx(-math.sqrt(2 / math.pi), rel=1e-6)
    # N(1, 2²) (the BN's scale taken by its magnitude): 1 - 2 phi(0.5) / Phi(-0.5)
    phi = math.exp(-0.125) / math.sqrt(2 * math.pi)
    big_phi = 0.5 * math.erfc(0.5 / math.sqrt(2))
    assert margin[1].item() == pytest.approx(1 - 2 * phi / big_phi, rel=1e-6)
    # under 0.1 % negative responses: -3 std
    assert margin[2].item() == pytest.approx(-3.0)


def test_ofd_margins_come_from_the_teachers_bn_before_relu(pair):
    student, teacher, _, student_taps, teacher_taps = pair
    term = ofd.Term()
    term.bind(student_taps, teacher_taps, PAIRS)
    estimated = [margin.clone() for margin in term.margins()]
    bn = teacher.get_submodule(feature_entries(teacher)[2]["bn_before_relu"])
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2.0, bn.num_features))
        bn.bias.copy_(torch.linspace(-1.0, 1.0, bn.num_features))
    term.bind_models(student, teacher)
    assert torch.allclose(term.margins()[1], gaussian_margin(bn.bias, bn.weight))
    assert not torch.allclose(term.margins()[1], estimated[1])
    assert all((margin <= 0).all() for margin in term.margins())
    assert not any(name.startswith("margin") for name in term.state_dict())  # not state


def test_ofd_margins_are_estimated_for_a_teacher_without_bn_names(pair):
    student, teacher, _, student_taps, teacher_taps = pair
    term = ofd.Term()
    term.bind(student_taps, teacher_taps, PAIRS)
    responses = teacher_taps.preact[3].transpose(0, 1).flatten(1)
    expected = gaussian_margin(responses.mean(1), responses.std(1, unbiased=False))
    timm_like = nn.Module()  # a teacher whose feature_info names no BN (timm's models)
    timm_like.feature_info = [{key: value for key, value in entry.items()
                               if key != "bn_before_relu"} for entry in feature_entries(teacher)]
    term.bind_models(student, timm_like)
    assert torch.allclose(term.margins()[2], expected)


def _train_step_gradients(term, student, teacher, inputs):
    """One loss on fresh taps of a student in train mode and a teacher whose parameters
    would take gradients: which parameters get them."""
    student.train()
    for model in (student, teacher):
        model.zero_grad(set_to_none=True)
        model.requires_grad_(True)
    term.zero_grad(set_to_none=True)
    loss = term(_taps(student, inputs), [_taps(teacher, inputs)], None)
    loss.backward()
    student.eval()
    return loss


@pytest.mark.parametrize("method", [ofd, reviewkd])
def test_gradients_reach_only_the_student_and_the_terms_modules(pair, method):
    student, teacher, inputs, student_taps, teacher_taps = pair
    term = method.Term()
    term.bind(student_taps, teacher_taps, PAIRS)
    term.bind_models(student, teacher)
    loss = _train_step_gradients(term, student, teacher, inputs)
    assert loss.item() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert student.conv1.weight.grad is not None and student.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in term.parameters())


def test_ofd_weighs_the_last_stage_one_and_each_earlier_half_the_next(pair):
    _, _, _, student_taps, teacher_taps = pair
    term = ofd.Term()
    term.bind(student_taps, teacher_taps, PAIRS)
    term.eval()
    total = term(student_taps, [teacher_taps], None)
    parts = []
    for connector, margin, (s, t) in zip(term.connectors, term.margins(), PAIRS):
        regressed = connector(student_taps.preact[s])
        target = nn.functional.adaptive_avg_pool2d(teacher_taps.preact[t], regressed.shape[-2:])
        parts.append(ofd_loss(regressed, target, margin))
    assert total.item() == pytest.approx((parts[0] / 4 + parts[1] / 2 + parts[2]).item())


# ----------------------------------------------------------------------------- ReviewKD
def test_hcl_loss_weighs_pooled_levels_by_halves():
    # 4x4 teacher: a pixel checkerboard (+-1, zero at every pool) plus 2 on the top-left 2x2
    # block; student zero. Full MSE 2, 2x2 pool MSE 1, 1x1 pool MSE 0.25; the 4x4 level is
    # not smaller than the map, so the weights are 1, 1/2, 1/4 (sum 1.75).
    checkerboard = torch.tensor([[1.0, -1.0] * 2, [-1.0, 1.0] * 2] * 2)
    block = torch.zeros(4, 4)
    block[:2, :2] = 2.0
    teacher = (checkerboard + block).view(1, 1, 4, 4)
    pooled = torch.full((1, 1, 1, 1), 3.0)  # a 1x1 map: its MSE alone
    expected = (2.0 + 0.5 * 1.0 + 0.25 * 0.25) / 1.75 + 9.0
    loss = hcl_loss([torch.zeros_like(teacher), torch.zeros_like(pooled)], [teacher, pooled])
    assert loss.item() == pytest.approx(expected)
    assert hcl_loss([teacher, pooled], [teacher, pooled]).item() == 0.0


def test_reviewkd_rebuilds_every_teacher_level_from_the_taps(pair):
    _, _, _, student_taps, teacher_taps = pair
    term = reviewkd.Term()
    term.bind(student_taps, teacher_taps, PAIRS)
    term.eval()
    # deepest first: the 64-d embedding (no fusion), then stages 3, 2, 1; mid = min(512, 64)
    assert [f.attention is None for f in term.fusions] == [True, False, False, False]
    assert [f.reduce[0].out_channels for f in term.fusions] == [64] * 4
    assert [f.project[0].out_channels for f in term.fusions] == [64, 64, 32, 16]
    assert term(student_taps, [teacher_taps], None).item() > 0


def test_reviewkd_needs_the_embeddings(pair):
    _, _, _, student_taps, teacher_taps = pair
    without = Taps(logits=student_taps.logits, features=student_taps.features,
                   preact=student_taps.preact)
    with pytest.raises(ConfigError, match="embeddings"):
        reviewkd.Term().bind(without, teacher_taps, PAIRS)


def test_feature_methods_refuse_taps_that_are_not_maps():
    # a transformer's hidden states: N x L x H
    hidden = [torch.randn(2, 5, 8) for _ in range(3)]
    taps = Taps(logits=torch.randn(2, 3), features=hidden, preact=hidden,
                embedding=torch.randn(2, 8))
    for term in (ofd.Term(), reviewkd.Term()):
        with pytest.raises(ConfigError, match=r"feature maps \(C x H x W\)") as error:
            term.bind(taps, taps, [(1, 1)])
        assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------ convreg
@pytest.mark.parametrize("student_size, teacher_size, kind", [
    (8, 4, nn.Conv2d),            # twice the teacher's: 3x3 stride 2
    (4, 8, nn.ConvTranspose2d),   # half: 4x4 stride-2 transposed conv
    (6, 4, nn.Conv2d),            # larger: a 3x3 kernel without padding
    (4, 4, nn.Conv2d),            # equal: 1x1
])
def test_convreg_maps_the_student_map_to_the_teachers_shape(student_size, teacher_size, kind):
    student = torch.randn(2, 3, student_size, student_size)
    teacher = torch.randn(2, 5, teacher_size, teacher_size)
    connector = convreg_connector("fitnet", 1, 1, student, teacher)
    assert type(connector[0]) is kind and connector[0].bias is not None
    assert isinstance(connector[1], nn.BatchNorm2d) and isinstance(connector[2], nn.ReLU)
    assert connector(student).shape == teacher.shape
    assert len(convreg_connector("ab", 1, 1, student, teacher, relu=False)) == 2


def test_convreg_refuses_a_student_map_it_cannot_bridge():
    student, teacher = torch.randn(2, 3, 3, 3), torch.randn(2, 5, 8, 8)
    with pytest.raises(ConfigError, match="half, twice or at least") as error:
        convreg_connector("fitnet", 1, 2, student, teacher, "distill.terms.fitnet.layers")
    assert "distill.terms.fitnet.layers" in str(error.value) and "\n" not in str(error.value)


def test_fitnet_connector_is_a_checked_choice(pair):
    _, _, _, student_taps, teacher_taps = pair
    with pytest.raises(ConfigError, match="connector=conv_1x1 is not one of conv_bn, convreg"):
        fitnet.Term(connector="conv_1x1")
    term = fitnet.Term(connector="convreg")
    term.bind(student_taps, teacher_taps, [(1, 2)])  # 8x8 student map -> 4x4 teacher map
    assert [type(layer) for layer in term.connectors[0]] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert term.connectors[0][0].stride == (2, 2)
    default = fitnet.Term()
    default.bind(student_taps, teacher_taps, [(1, 2)])
    assert default.connectors[0][0].kernel_size == (1, 1) and default.connectors[0][0].bias is None


# --------------------------------------------------------------------------- end to end
def _run(compose_cfg, tmp_path: Path, cache: Path, *overrides: str) -> dict:
    cfg = compose_cfg(
        "data=digits", "data.train_subset=64", "trainer.max_epochs=1", "teacher.max_epochs=1",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "logger=none",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "model=resnet8", "teacher.model.name=resnet14", "stage=distill",
        f"paths.cache_dir={cache}", *overrides)
    return run(cfg, run_dir=tmp_path / f"run{len(list(tmp_path.iterdir()))}")


def _check_record(record: dict, terms: list[str]) -> None:
    assert record["status"] == "completed"
    assert sorted(record["distill_terms"]) == sorted(terms)
    for term in terms:
        value = record["metrics"][f"train/loss_{term}"]
        assert math.isfinite(value) and value > 0


def test_ofd_reviewkd_and_convreg_fitnet_train_one_epoch_together(compose_cfg, tmp_path):
    record = _run(compose_cfg, tmp_path, tmp_path / "cache", "distill=[ofd,reviewkd,fitnet]",
                  "distill.terms.fitnet.connector=convreg")
    _check_record(record, ["ofd", "reviewkd", "fitnet"])


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ("distill=ofd",), ("distill=reviewkd",), ("distill=fitnet",
                                              "distill.terms.fitnet.connector=convreg"),
    ("distill=ofd", "model=wrn_16_1", "teacher.model.name=wrn_16_2"),
    ("distill=reviewkd", "model=wrn_16_1", "teacher.model.name=wrn_16_2"),
    ("distill=ofd", "model=mobilenetv3_small_100"),
    ("distill=reviewkd", "model=mobilenetv3_small_100"),
])
def test_each_method_trains_one_epoch(compose_cfg, tmp_path_factory, overrides):
    run_dir = tmp_path_factory.mktemp("beyond")
    record = _run(compose_cfg, run_dir, tmp_path_factory.getbasetemp() / "beyond-cache",
                  *overrides)
    _check_record(record, [overrides[0].split("=")[1]])
