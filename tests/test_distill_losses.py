"""Each loss equals its paper's formula on small hand-computable tensors, and is zero when the
student equals the teacher."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lepton_exp.distill import (
    attention_map,
    attention_transfer_loss,
    dkd_loss,
    hard_target_loss,
    hint_loss,
    kd_loss,
    soft_targets,
)

LN3 = math.log(3.0)


def test_losses_are_importable_from_the_package_root():
    import lepton_exp.distill as distill

    for name in ("kd_loss", "dkd_loss", "attention_transfer_loss", "hint_loss"):
        assert callable(getattr(distill, name))
    with pytest.raises(AttributeError):
        distill.not_a_loss  # noqa: B018


# ----------------------------------------------------------------------------------- KD
def test_kd_loss_is_kl_of_softened_distributions_times_t_squared():
    # Teacher [ln 3, 0] at T=1 -> p = [3/4, 1/4]; uniform student q = [1/2, 1/2].
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[LN3, 0.0]])
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_loss(student, teacher, 1.0).item() == pytest.approx(kl, rel=1e-6)
    # At T=2 the teacher logits [2 ln 3, 0] soften to the same p: the loss is KL * T^2.
    assert kd_loss(student, 2 * teacher, 2.0).item() == pytest.approx(4 * kl, rel=1e-6)


def test_kd_loss_is_a_batch_mean_and_zero_for_identical_logits():
    student = torch.zeros(2, 2)
    teacher = torch.tensor([[LN3, 0.0], [0.0, 0.0]])  # second row equals the student
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kd_loss(student, teacher, 1.0).item() == pytest.approx(kl / 2, rel=1e-6)
    logits = torch.randn(8, 10)
    assert kd_loss(logits, logits.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_multi_teacher_targets_are_the_weighted_average_of_softened_distributions():
    first, second = torch.tensor([[LN3, 0.0]]), torch.tensor([[0.0, LN3]])
    targets = soft_targets([first, second], 1.0, [3.0, 1.0])  # weights normalised to 3/4, 1/4
    expected = 0.75 * torch.tensor([0.75, 0.25]) + 0.25 * torch.tensor([0.25, 0.75])
    assert torch.allclose(targets, expected[None])
    student = torch.zeros(1, 2)
    p = expected
    kl = float((p * torch.log(p / 0.5)).sum())
    value = kd_loss(student, [first, second], 1.0, [3.0, 1.0]).item()
    assert value == pytest.approx(kl, rel=1e-5)


def test_hard_target_loss_is_cross_entropy_on_the_teacher_argmax():
    student = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]])
    teacher = torch.tensor([[0.0, 5.0, 0.0], [9.0, 0.0, 0.0]])  # argmax 1, 0
    expected = F.cross_entropy(student, torch.tensor([1, 0]))
    assert hard_target_loss(student, teacher).item() == pytest.approx(expected.item())


# ---------------------------------------------------------------------------------- DKD
def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p * torch.log(p / q)).sum())


def test_dkd_loss_matches_the_papers_tckd_and_nckd():
    student = torch.tensor([[1.0, 0.0, -1.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.5]])
    label = torch.tensor([1])
    temperature = 2.0
    p_s, p_t = F.softmax(student / temperature, 1)[0], F.softmax(teacher / temperature, 1)[0]
    b_s = torch.stack([p_s[1], 1 - p_s[1]])
    b_t = torch.stack([p_t[1], 1 - p_t[1]])
    others = torch.tensor([0, 2])
    nt_s, nt_t = p_s[others] / p_s[others].sum(), p_t[others] / p_t[others].sum()
    tckd, nckd = _kl(b_t, b_s), _kl(nt_t, nt_s)
    value = dkd_loss(student, teacher, label, temperature, tckd_weight=0.5, nckd_weight=3.0)
    assert value.item() == pytest.approx(temperature ** 2 * (0.5 * tckd + 3.0 * nckd), rel=1e-5)


def test_dkd_reformulates_kd_as_tckd_plus_weighted_nckd():
    # Zhao et al., Eq. 1: KD = TCKD + (1 - p_t^target) * NCKD, per sample.
    torch.manual_seed(0)
    student, teacher = torch.randn(1, 5), torch.randn(1, 5)
    label = torch.tensor([3])
    p_target = F.softmax(teacher / 4.0, 1)[0, 3].item()
    kd = kd_loss(student, teacher, 4.0)
    dkd = dkd_loss(student, teacher, label, 4.0, tckd_weight=1.0, nckd_weight=1 - p_target)
    assert dkd.item() == pytest.approx(kd.item(), rel=1e-4)


def test_dkd_loss_is_zero_for_identical_logits():
    logits = torch.randn(6, 10)
    labels = torch.randint(0, 10, (6,))
    assert dkd_loss(logits, logits.clone(), labels, 4.0).item() == pytest.approx(0.0, abs=1e-5)


# ----------------------------------------------------------------------------------- AT
def test_attention_map_is_normalised_channel_mean_of_powered_activations():
    feature = torch.tensor([[[[1.0, -1.0]], [[3.0, 1.0]]]])  # N=1, C=2, H=1, W=2
    expected = torch.tensor([5.0, 1.0]) / math.sqrt(26.0)  # means of |a|^2: (1+9)/2, (1+1)/2
    assert torch.allclose(attention_map(feature, p=2), expected[None])
    # odd p: the absolute value matters (-1 counts as 1)
    cubed = torch.tensor([14.0, 1.0]) / math.sqrt(197.0)  # (1+27)/2, (1+1)/2
    assert torch.allclose(attention_map(feature, p=3), cubed[None])


def test_attention_transfer_loss_is_mean_squared_difference_summed_over_pairs():
    student = torch.tensor([[[[1.0, 0.0]]]])  # attention [1, 0]
    teacher = torch.tensor([[[[0.0, 2.0]]]])  # attention [0, 1]
    single = attention_transfer_loss([student], [teacher])
    assert single.item() == pytest.approx((1 + 1) / 2)
    pairs = attention_transfer_loss([student, student], [teacher, student])
    assert pairs.item() == pytest.approx(1.0)  # the identical pair adds zero


def test_attention_transfer_pools_the_larger_map_to_the_smaller():
    torch.manual_seed(0)
    student = torch.randn(2, 3, 8, 8)  # channels may differ: maps are channel means
    teacher = torch.randn(2, 5, 4, 4)
    pooled = F.adaptive_avg_pool2d(student, (4, 4))
    expected = (attention_map(pooled) - attention_map(teacher)).pow(2).mean()
    assert attention_transfer_loss([student], [teacher]).item() == pytest.approx(expected.item())
    # ... whichever side is larger.
    swapped = (attention_map(teacher) - attention_map(pooled)).pow(2).mean()
    assert attention_transfer_loss([teacher], [student]).item() == pytest.approx(swapped.item())


def test_attention_transfer_is_zero_for_identical_features():
    features = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)]
    loss = attention_transfer_loss(features, [f.clone() for f in features])
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


# ------------------------------------------------------------------------------- FitNet
def test_hint_loss_is_mean_squared_error():
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    teacher = torch.tensor([[1.0, 0.0], [3.0, 8.0]])
    assert hint_loss(student, teacher).item() == pytest.approx((0 + 4 + 0 + 16) / 4)
    assert hint_loss(teacher, teacher.clone()).item() == 0.0


def test_dkd_keeps_a_finite_gradient_when_the_student_is_very_confident():
    # With 1 - p_target the non-target mass underflows to 0 in float32 at a logit gap of ~90
    # (at T=4) and TCKD's gradient vanishes; summing the non-target probabilities keeps it.
    student = torch.tensor([[200.0, 0.0, 0.0]], requires_grad=True)  # 1 - p_target == 0.0
    teacher = torch.tensor([[1.0, 0.0, 0.0]])
    loss = dkd_loss(student, teacher, torch.tensor([0]), 4.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    assert student.grad[0, 0] > 0.1
