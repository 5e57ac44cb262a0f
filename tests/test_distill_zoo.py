"""The CRD table's relational and feature methods (SP, PKT, RKD, NST, CC, VID) and DIST: each
plain function equals its formula on small hand-computable tensors, is zero (or minimal) when
the student equals the teacher, and sends gradients only to the student and the method's own
modules; each method trains one epoch end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from safetensors.torch import load_file

from lepton_exp.distill import cc_loss, dist_loss, nst_loss, pkt_loss, rkd_loss, sp_loss, vid_loss
from lepton_exp.distill.base import TermInputs
from lepton_exp.distill.objective import build_objective
from lepton_exp.errors import ConfigError
from lepton_exp.models.taps import Taps

# The CRD table's loss weights (beta; DIST: torchdistill's sample), each method's yaml default.
WEIGHTS = {"sp": 3000, "pkt": 30000, "rkd": 1, "nst": 50, "cc": 0.02, "vid": 1, "dist": 2}
METHODS = tuple(WEIGHTS)


def test_the_zoos_losses_are_importable_from_the_package_root():
    import lepton_exp.distill as distill

    for name in ("sp_loss", "pkt_loss", "rkd_loss", "nst_loss", "cc_loss", "vid_loss",
                 "dist_loss"):
        assert callable(getattr(distill, name))


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.clone().requires_grad_(True) for t in tensors]


def assert_gradients_reach_only_the_student(loss_fn, student, teacher):
    student, teacher = leaves(student, teacher)
    loss_fn(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


# ------------------------------------------------------------------------------------ SP
def test_sp_loss_is_the_distance_of_row_normalised_batch_gram_matrices():
    # Flattened student rows [1, 0], [1, 1]: Gram [[1, 1], [1, 2]], rows over sqrt 2, sqrt 5;
    # teacher rows [1, 0], [0, 1]: Gram = identity.
    student = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).view(2, 2, 1, 1)
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 1, 2, 1)  # other shape: allowed
    r2, r5 = math.sqrt(2), math.sqrt(5)
    squared = (1 - 1 / r2) ** 2 + (1 / r2) ** 2 + (1 / r5) ** 2 + (1 - 2 / r5) ** 2
    assert sp_loss(student, teacher).item() == pytest.approx(squared / 4, rel=1e-6)


def test_sp_loss_is_zero_for_equal_or_proportional_features_and_trains_only_the_student():
    torch.manual_seed(0)
    feature = torch.randn(4, 3, 2, 2)
    assert sp_loss(feature, feature.clone()).item() == pytest.approx(0.0, abs=1e-7)
    assert sp_loss(feature, 3 * feature).item() == pytest.approx(0.0, abs=1e-7)
    assert_gradients_reach_only_the_student(sp_loss, feature, torch.randn(4, 5, 2, 2))


# ----------------------------------------------------------------------------------- PKT
def test_pkt_loss_is_the_kl_of_cosine_neighbour_distributions():
    # Student: orthogonal rows, cosines [[1, 0], [0, 1]] -> (x + 1) / 2 -> rows / 1.5
    # = [[2/3, 1/3], [1/3, 2/3]]; teacher: parallel rows -> every entry 1 -> rows [1/2, 1/2].
    student = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    teacher = torch.tensor([[1.0, 0.0], [5.0, 0.0]])
    eps = 1e-7
    entries = [0.5 * math.log((0.5 + eps) / (s + eps)) for s in (2 / 3, 1 / 3, 1 / 3, 2 / 3)]
    assert pkt_loss(student, teacher).item() == pytest.approx(sum(entries) / 4, rel=1e-5)


def test_pkt_loss_is_zero_for_equal_embeddings_and_trains_only_the_student():
    torch.manual_seed(0)
    embedding = torch.randn(5, 4)
    assert pkt_loss(embedding, embedding.clone()).item() == pytest.approx(0.0, abs=1e-7)
    assert_gradients_reach_only_the_student(pkt_loss, embedding, torch.randn(5, 7))


# ----------------------------------------------------------------------------------- RKD
def _smooth_l1(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < 1, 0.5 * x ** 2, np.abs(x) - 0.5)


def _rkd_by_loops(student: np.ndarray, teacher: np.ndarray) -> tuple[float, float]:
    """Distance and angle terms, one sample pair / triplet at a time."""
    def distances(e):
        d = np.array([[np.linalg.norm(a - b) for b in e] for a in e])
        return d / d[d > 0].mean()

    def angles(e):
        n = len(e)
        out = np.zeros((n, n, n))
        for i in range(n):
            for j in range(n):
                for k in range(n):
                    u, v = e[j] - e[i], e[k] - e[i]
                    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
                    out[i, j, k] = 0.0 if nu == 0 or nv == 0 else u @ v / (nu * nv)
        return out

    distance = _smooth_l1(distances(student) - distances(teacher)).mean()
    angle = _smooth_l1(angles(student) - angles(teacher)).mean()
    return float(distance), float(angle)


def test_rkd_loss_is_weighted_smooth_l1_of_distances_and_triplet_angles():
    student = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # a right angle
    teacher = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])  # collinear
    distance, angle = _rkd_by_loops(student, teacher)
    assert distance > 0 and angle > 0
    s, t = torch.tensor(student), torch.tensor(teacher)
    assert rkd_loss(s, t).item() == pytest.approx(25 * distance + 50 * angle, rel=1e-5)
    assert rkd_loss(s, t, 1.0, 0.0).item() == pytest.approx(distance, rel=1e-5)
    assert rkd_loss(s, t, 0.0, 1.0).item() == pytest.approx(angle, rel=1e-5)


def test_rkd_loss_is_zero_for_equal_or_scaled_embeddings_and_trains_only_the_student():
    torch.manual_seed(0)
    embedding = torch.randn(5, 4)
    assert rkd_loss(embedding, embedding.clone()).item() == pytest.approx(0.0, abs=1e-5)
    assert rkd_loss(embedding, 4 * embedding).item() == pytest.approx(0.0, abs=1e-5)
    assert_gradients_reach_only_the_student(rkd_loss, embedding, torch.randn(5, 6))
    assert rkd_loss(embedding[:1], embedding[:1] + 1).item() == 0.0  # one sample: no NaN


# ----------------------------------------------------------------------------------- NST
def test_nst_loss_is_the_polynomial_kernel_mmd_of_normalised_channel_maps():
    # One sample, maps of 2 positions. Student channels [1, 0] and [0, 2] -> unit e1, e2;
    # teacher's single channel [1, 1] -> (1, 1) / sqrt 2. Kernel (a.b)^2 means:
    # k(t, t) = 1, k(s, s) = mean [[1, 0], [0, 1]] = 1/2, k(s, t) = mean [1/2, 1/2] = 1/2.
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0]]).view(1, 2, 2, 1)
    teacher = torch.tensor([[1.0, 1.0]]).view(1, 1, 2, 1)
    assert nst_loss([student], [teacher]).item() == pytest.approx(1 + 0.5 - 2 * 0.5)


def test_nst_loss_pools_the_larger_map_and_sums_over_pairs():
    torch.manual_seed(0)
    large, small = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)
    pooled = F.adaptive_avg_pool2d(large, (2, 2))
    assert nst_loss([large], [small]).item() == pytest.approx(
        nst_loss([pooled], [small]).item(), rel=1e-6)
    assert nst_loss([small], [large]).item() == pytest.approx(
        nst_loss([small], [pooled]).item(), rel=1e-6)
    other_s, other_t = torch.randn(2, 4, 2, 2), torch.randn(2, 6, 2, 2)
    assert nst_loss([large, other_s], [small, other_t]).item() == pytest.approx(
        nst_loss([large], [small]).item() + nst_loss([other_s], [other_t]).item(), rel=1e-6)


def test_nst_loss_is_zero_for_equal_maps_and_trains_only_the_student():
    torch.manual_seed(0)
    feature = torch.randn(3, 4, 2, 2)
    assert nst_loss([feature], [feature.clone()]).item() == pytest.approx(0.0, abs=1e-6)
    assert_gradients_reach_only_the_student(lambda s, t: nst_loss([s], [t]), feature,
                                            torch.randn(3, 6, 2, 2))


# ------------------------------------------------------------------------------------ CC
def test_cc_loss_is_the_mean_product_of_consecutive_absolute_differences():
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    teacher = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, -1.0]])
    # |s - t| = [1, 2], [2, 3], [1, 1]: pairs (0, 1) 1*2 + 2*3 = 8, (1, 2) 2*1 + 3*1 = 5
    assert cc_loss(student, teacher).item() == pytest.approx((8 + 5) / 2)


def test_cc_loss_is_zero_for_equal_embeddings_and_trains_both_projections():
    torch.manual_seed(0)
    embedding = torch.randn(4, 3)
    assert cc_loss(embedding, embedding.clone()).item() == 0.0
    assert cc_loss(embedding[:1], embedding[:1] + 1).item() == 0.0  # one sample: no NaN
    # The arguments are the projected embeddings: both projections train.
    student, teacher = leaves(embedding, torch.randn(4, 3))
    cc_loss(student, teacher).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------- VID
def test_vid_loss_is_the_gaussian_negative_log_likelihood_without_constant():
    # One sample, two channels at one position: errors 1 and 2, variances 1 and e.
    mean = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    target = torch.zeros(1, 2, 1, 1)
    variance = torch.tensor([1.0, math.e])
    expected = 0.5 * ((1 / 1 + 0.0) + (4 / math.e + 1.0)) / 2
    assert vid_loss(mean, variance, target).item() == pytest.approx(expected, rel=1e-6)
    # A per-channel variance is the same as one broadcast by hand.
    assert vid_loss(mean, variance.view(1, 2, 1, 1), target).item() == pytest.approx(expected)


def test_vid_loss_is_minimal_at_the_target_and_trains_mean_and_variance_only():
    torch.manual_seed(0)
    target = torch.randn(2, 3, 2, 2)
    variance = torch.tensor([0.5, 1.0, 2.0])
    mean, log_variance, teacher = leaves(target, variance.log(), target)
    loss = vid_loss(mean, log_variance.exp(), teacher)
    assert loss.item() == pytest.approx(0.5 * float(variance.log().mean()), rel=1e-6)
    loss.backward()
    assert mean.grad.abs().max() == 0  # the mean is at its optimum: the target
    assert log_variance.grad.abs().sum() > 0 and teacher.grad is None
    # For a fixed error the best variance is the squared error.
    error = torch.full((1, 1, 1, 1), 0.7)
    values = [vid_loss(error, torch.tensor([v]), torch.zeros(1, 1, 1, 1)).item()
              for v in (0.49 / 2, 0.49, 0.49 * 2)]
    assert values[1] < min(values[0], values[2])


# ---------------------------------------------------------------------------------- DIST
def _pearson_mean(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b, strict=True)]))


def test_dist_loss_is_one_minus_pearson_correlations_between_and_within_classes():
    p_student = np.array([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.3, 0.2, 0.5]])
    p_teacher = np.array([[0.6, 0.3, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    inter = 1 - _pearson_mean(p_student, p_teacher)  # per sample, across classes
    intra = 1 - _pearson_mean(p_student.T, p_teacher.T)  # per class, across the batch
    student, teacher = torch.tensor(p_student).log(), torch.tensor(p_teacher).log()
    assert dist_loss(student, teacher, 1.0, 0.0).item() == pytest.approx(inter, rel=1e-6)
    assert dist_loss(student, teacher, 0.0, 1.0).item() == pytest.approx(intra, rel=1e-6)
    assert dist_loss(student, teacher, 2.0, 3.0).item() == pytest.approx(
        2 * inter + 3 * intra, rel=1e-6)
    # At T = 2, logits twice as large give the same distributions; the loss is times T^2.
    assert dist_loss(2 * student, 2 * teacher, temperature=2.0).item() == pytest.approx(
        4 * (inter + intra), rel=1e-6)


def test_dist_loss_averages_several_teachers_distributions_like_kd():
    torch.manual_seed(0)
    student, first, second = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5)
    mixed = 0.75 * first.softmax(1) + 0.25 * second.softmax(1)
    assert dist_loss(student, [first, second], teacher_weights=[3.0, 1.0]).item() == \
        pytest.approx(dist_loss(student, mixed.log()).item(), rel=1e-5)


def test_dist_loss_is_zero_for_equal_logits_and_trains_only_the_student():
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    assert dist_loss(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert_gradients_reach_only_the_student(dist_loss, logits, torch.randn(6, 5))


# -------------------------------------------------------------- terms in the objective
def distill_cfg(name: str, **options):
    return OmegaConf.create({
        "terms": {name: options}, "temperature": 1.0, "alpha": 1.0,
        "layers": {"student": "auto", "teacher": "auto"},
        "schedule": {"name": "constant", "temperature_final": None, "alpha_final": None},
        "warmup_epochs": 0.0})


def cnn_taps(channels: tuple[int, ...], embedding: int, seed: int) -> Taps:
    """Taps shaped like a CIFAR ResNet's: stem and three stages (8x8, 8x8, 4x4, 2x2)."""
    generator = torch.Generator().manual_seed(seed)
    sizes = (8, 8, 4, 2)
    features = [torch.randn(4, c, s, s, generator=generator).relu().requires_grad_(True)
                for c, s in zip(channels, sizes, strict=True)]
    return Taps(logits=torch.randn(4, 10, generator=generator).requires_grad_(True),
                features=features,
                embedding=torch.randn(4, embedding, generator=generator).requires_grad_(True))


def objective_for(name: str, student: Taps, teacher: Taps, **options):
    objective = build_objective(distill_cfg(name, **options))
    objective.bind(student, teacher, {"student": "auto", "teacher": "auto"})
    return objective


@pytest.mark.parametrize("name", METHODS)
def test_each_term_sends_gradients_to_the_student_and_its_own_modules_only(name):
    student, teacher = cnn_taps((4, 4, 8, 16), 16, 0), cnn_taps((8, 8, 16, 32), 32, 1)
    term = objective_for(name, student, teacher).terms[name]
    term(student, [teacher], TermInputs(torch.arange(4), 1.0, [1.0])).backward()
    read = {"logits": [student.logits], "embedding": [student.embedding],
            "features": [student.features[s] for s, _ in term.pairs]}[term.needs]
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in read)
    teacher_tensors = [teacher.logits, teacher.embedding, *teacher.features]
    assert all(t.grad is None for t in teacher_tensors)
    own = list(term.parameters())
    assert bool(own) == (name in ("cc", "vid"))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in own)


def test_the_yamls_read_the_references_taps_and_build_modules_from_the_shapes(compose_cfg):
    student, teacher = cnn_taps((4, 4, 8, 16), 16, 0), cnn_taps((8, 8, 16, 32), 32, 1)

    def term(name: str):
        objective = build_objective(compose_cfg(f"distill={name}").distill)
        objective.bind(student, teacher, {"student": "auto", "teacher": "auto"})
        return objective.terms[name]

    assert term("sp").pairs == [(3, 3)]  # RepDistiller's feat[-2]: the last stage only
    assert term("nst").pairs == [(1, 1), (2, 2), (3, 3)]  # feat[1:-1]: every stage
    vid = term("vid")
    assert vid.pairs == [(1, 1), (2, 2), (3, 3)]
    regressor = vid.regressors[2]
    assert [m.weight.shape[:2] for m in regressor.mean if hasattr(m, "weight")] == [
        (32, 16), (32, 32), (32, 32)]  # mid width = the teacher's channels
    assert torch.allclose(regressor.variance(), torch.full((32,), 5.0))  # init_pred_var
    cc = term("cc")
    assert cc.student_projection.weight.shape == (128, 16)
    assert cc.teacher_projection.weight.shape == (128, 32)
    assert (term("rkd").distance_weight, term("rkd").angle_weight) == (25.0, 50.0)
    dist = term("dist")
    assert (dist.beta, dist.gamma) == (1.0, 1.0)
    assert compose_cfg("distill=dist").distill.temperature == 1.0


@pytest.mark.parametrize("name", ["sp", "nst", "vid"])
def test_map_methods_refuse_a_transformers_token_sequences(name):
    hidden = [torch.randn(2, 5, 8) for _ in range(3)]
    tokens = Taps(logits=torch.randn(2, 2), features=hidden, embedding=torch.randn(2, 8))
    cnn = cnn_taps((4, 4, 8, 16), 16, 0)
    for student, teacher in ((tokens, tokens), (cnn, tokens)):
        with pytest.raises(ConfigError, match=f"distill term {name} compares CNN feature maps"):
            objective_for(name, student, teacher)


@pytest.mark.parametrize("name", ["pkt", "rkd", "cc"])
def test_embedding_methods_refuse_embeddings_that_are_not_vectors(name):
    student = Taps(logits=torch.randn(2, 2), embedding=torch.randn(2, 5, 8))
    teacher = Taps(logits=torch.randn(2, 2), embedding=torch.randn(2, 8))
    with pytest.raises(ConfigError, match=f"distill term {name} needs N x D embeddings"):
        objective_for(name, student, teacher)


def test_dist_refuses_regression_data():
    with pytest.raises(ConfigError, match="dist correlates class probabilities"):
        build_objective(distill_cfg("dist"), regression=True)


# ------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo-teacher-cache")  # one teacher for every method


@pytest.mark.slow  # tests/test_distill_stage.py runs every option one epoch by default
@pytest.mark.parametrize("name", METHODS)
def test_each_method_trains_one_epoch_and_exports_the_student_alone(compose_cfg, tmp_path,
                                                                    cache_dir, name):
    from lepton_exp.app.runner import run_stage

    cfg = compose_cfg("stage=distill", "data=digits", "data.train_subset=96",
                      "data.batch_size=32", "data.eval_batch_size=512",
                      "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                      "model=resnet8", "teacher.model.name=resnet14", "teacher.max_epochs=1",
                      "trainer.max_epochs=1", "logger=none", "trainer.enable_progress_bar=false",
                      "trainer.enable_model_summary=false", f"paths.cache_dir={cache_dir}",
                      f"distill={name}")
    record = run_stage(cfg, run_dir=tmp_path / "run")
    assert record["status"] == "completed" and record["distill_terms"] == [name]
    metrics = record["metrics"]
    assert math.isfinite(metrics[f"train/loss_{name}"])
    assert metrics["train/weight_ce"] == 1.0  # the CRD table's -r 1 (cross-entropy kept)
    assert metrics[f"train/weight_{name}"] == pytest.approx(WEIGHTS[name])
    exported = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert not any(key.startswith(("objective", "teachers")) for key in exported)
