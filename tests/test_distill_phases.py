"""AB, FSP and FT (methods with an initialisation phase) and CRD: their losses on tensors
computed by hand, and their runs: the phase as a run of its own, resumable; CRD's memory
banks in the checkpoint, so an interrupted run resumes to identical metrics."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_resume import _stop_at  # Ctrl-C in the step that would make step N

from lepton_exp.app.runner import run_stage
from lepton_exp.distill import ab_loss, crd_nce_loss, fsp_loss, ft_loss
from lepton_exp.distill.methods import crd
from lepton_exp.distill.methods.ab import activation_boundary_loss
from lepton_exp.distill.methods.fsp import fsp_matrices
from lepton_exp.errors import Stopped
from lepton_exp.models.taps import Taps
from lepton_exp.training.resume import batches_done_in_epoch

FAST = ["data=synthetic", "data.num_samples=300", "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "logger=none", "teacher.max_epochs=1", "teacher.model.name=resnet14"]


# --------------------------------------------------------------------------------- formulas
def test_activation_boundary_loss_is_the_squared_hinge_on_the_wrong_side_of_the_margin():
    student = torch.tensor([[-2.0, -0.5, 0.5, 2.0]])
    teacher = torch.tensor([[-1.0, 1.0, -1.0, 1.0]])
    # -2: off and below -1: 0; -0.5: on, below +1: (-0.5-1)^2; 0.5: off, above -1:
    # (0.5+1)^2; 2: on and above +1: 0
    assert activation_boundary_loss(student, teacher).item() == pytest.approx(1.5**2 * 2)
    # pairs weighted 2^(i-n+1), / batch, x 3/1000
    maps = [student.view(1, 4, 1, 1)] * 2
    targets = [teacher.view(1, 4, 1, 1)] * 2
    assert ab_loss(maps, targets).item() == pytest.approx((0.5 + 1) * 4.5 * 3 / 1000)
    assert ab_loss([2 * targets[0]], targets[:1]).item() == 0  # beyond the margin, same side


def test_fsp_matrices_are_spatial_means_of_channel_products_and_the_loss_their_mse():
    lower = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]]])  # 1x2x2x2
    upper = torch.tensor([[[[2.0]], [[4.0]], [[1.0]]]])  # 1x3x1x1: lower is pooled to 1x1
    matrix, = fsp_matrices([lower, upper])
    pooled = torch.tensor([2.5, 0.5])
    assert torch.allclose(matrix[0], pooled[:, None] * torch.tensor([2.0, 4.0, 1.0]))
    student = [lower, upper]
    teacher = [lower, upper * 2]
    expected = ((matrix - 2 * matrix) ** 2).mean()
    assert torch.allclose(fsp_loss(student, teacher), expected)
    assert fsp_loss(student, student).item() == 0


def test_factor_transfer_loss_compares_normalised_squared_channel_means():
    student = torch.tensor([[[[1.0, 0.0]], [[1.0, 0.0]]]])  # 1x2x1x2
    teacher = torch.tensor([[[[0.0, 3.0]], [[0.0, 1.0]]]])
    # student factor: mean of squares over channels = [1, 0] -> normalised [1, 0];
    # teacher: [0, 5] -> [0, 1]; mean |difference| = 1
    assert ft_loss(student, teacher).item() == pytest.approx(1.0)
    assert ft_loss(teacher, teacher).item() == 0


def test_crd_nce_loss_follows_the_noise_contrastive_formula():
    scores = torch.tensor([[0.5, 0.1, 0.2], [0.3, 0.4, 0.05]])
    num_data, negatives = 10, 2
    noise = negatives / num_data
    expected = 0.0
    for row in scores.tolist():
        expected -= math.log(row[0] / (row[0] + noise + crd.EPS))
        expected -= sum(math.log(noise / (value + noise + crd.EPS)) for value in row[1:])
    assert crd_nce_loss(scores, num_data).item() == pytest.approx(expected / 2, rel=1e-6)


def _bound_crd(negatives=3, samples=12, classes=3):
    torch.manual_seed(0)
    term = crd.Term(feature_dim=4, negatives=negatives, temperature=0.5, momentum=0.5)
    student = Taps(logits=torch.zeros(2, classes), embedding=torch.randn(2, 6))
    teacher = Taps(logits=torch.zeros(2, classes), embedding=torch.randn(2, 5))
    term.bind(student, teacher, [])
    term.attach_data(torch.arange(samples) % classes)
    return term


def test_crd_draws_negatives_of_other_classes_reproducibly():
    term = _bound_crd(negatives=50)
    indices = torch.tensor([0, 1, 5])
    drawn = term.draw_negatives(indices, step=7)
    labels = term.train_labels
    assert drawn.shape == (3, 50)
    for row, index in zip(drawn, indices):
        assert (labels[row] != labels[index]).all()
    assert torch.equal(drawn, term.draw_negatives(indices, step=7))
    assert not torch.equal(drawn, term.draw_negatives(indices, step=8))
    # as many negatives as a pool holds: each of them once (the code's replace=False)
    term = _bound_crd(negatives=8)
    row = term.draw_negatives(torch.tensor([0]), step=0)[0]
    assert sorted(row.tolist()) == [i for i in range(12) if i % 3 != 0]


def test_crd_step_scores_against_the_other_sides_bank_then_moves_both_banks():
    from lepton_exp.distill.base import TermInputs

    term = _bound_crd()
    before_student, before_teacher = term.memory_student.clone(), term.memory_teacher.clone()
    student = Taps(logits=torch.zeros(2, 3), embedding=torch.randn(2, 6, requires_grad=True))
    teacher_embedding = torch.randn(2, 5, requires_grad=True)
    teacher = Taps(logits=torch.zeros(2, 3), embedding=teacher_embedding)
    indices = torch.tensor([4, 9])
    inputs = TermInputs(labels=torch.tensor([1, 0]), temperature=1.0, teacher_weights=[1.0],
                        indices=indices, step=3)
    loss = term(student, [teacher], inputs)
    # by hand: the same negatives, scores, Z of the first step and the NCE loss
    negatives = term.draw_negatives(indices, 3)
    sample = torch.cat([indices[:, None], negatives], 1)
    s_vec = torch.nn.functional.normalize(term.embed_student(student.embedding))
    t_vec = torch.nn.functional.normalize(term.embed_teacher(teacher_embedding))
    s_scores = torch.exp((before_teacher[sample] @ s_vec[:, :, None]).squeeze(-1) / 0.5)
    t_scores = torch.exp((before_student[sample] @ t_vec[:, :, None]).squeeze(-1) / 0.5)
    s_scores, t_scores = (scores / (scores.mean() * 12) for scores in (s_scores, t_scores))
    expected = crd_nce_loss(s_scores, 12) + crd_nce_loss(t_scores, 12)
    assert torch.allclose(loss, expected, rtol=1e-5)
    moved = torch.nn.functional.normalize(before_student[indices] * 0.5 + s_vec.detach() * 0.5)
    assert torch.allclose(term.memory_student[indices], moved, atol=1e-6)
    untouched = torch.ones(12, dtype=torch.bool)
    untouched[indices] = False
    assert torch.equal(term.memory_student[untouched], before_student[untouched])
    assert (term.normalisers > 0).all()
    loss.backward()
    assert student.embedding.grad is not None and teacher_embedding.grad is not None
    assert term.embed_teacher.weight.grad is not None  # the teacher's projection trains too


# --------------------------------------------------------------------------------- runs
def test_factor_transfer_keeps_the_phase_paraphraser_fixed(compose_cfg, tmp_path):
    from safetensors.torch import load_file

    from lepton_exp.data import build_datamodule
    from lepton_exp.models import build_model
    from lepton_exp.teachers.load import resolve_teachers
    from lepton_exp.training.distill import distillation_module

    cfg = compose_cfg(*FAST, "distill=ft", "distill.terms.ft.init_epochs=1",
                      f"paths.cache_dir={tmp_path / 'cache'}")
    record = run_stage(cfg.copy(), run_dir=tmp_path / "run")
    phase_dir = tmp_path / "run" / "init"
    state = load_file(str(phase_dir / "distill_state.safetensors"))
    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    teachers = resolve_teachers(cfg, datamodule.info, run_stage)
    module, _ = distillation_module(cfg, datamodule, build_model(cfg.model, datamodule.info),
                                    teachers, phase_dir=phase_dir)
    paraphraser = module.objective.terms["ft"].paraphraser
    for name, value in paraphraser.state_dict().items():
        assert torch.equal(value, state[f"terms.ft.paraphraser.{name}"])
    assert not any(p.requires_grad for p in paraphraser.parameters())
    assert all(p.requires_grad for p in module.objective.terms["ft"].translator.parameters())
    assert record["metrics"]["train/loss_ft"] > 0


@pytest.mark.parametrize("method, stopped_in", [("crd", "distillation"), ("fsp", "phase")])
def test_an_interrupted_run_resumes_to_identical_metrics(compose_cfg, tmp_path, monkeypatch,
                                                         method, stopped_in):
    from lepton_exp.training.distill import DistillationModule
    from lepton_exp.training.init_phase import InitPhaseModule

    overrides = {"crd": ["distill=crd", "distill.terms.crd.negatives=32"],
                 "fsp": ["distill=fsp", "distill.terms.fsp.init_epochs=2",
                         "teacher.model.name=resnet8", "trainer.max_epochs=1"]}[method]
    cfg = compose_cfg(*FAST, *overrides, "model.drop_rate=0.3",
                      f"paths.cache_dir={tmp_path / 'cache'}")
    reference = run_stage(cfg.copy(), run_dir=tmp_path / "reference")
    module_class = InitPhaseModule if stopped_in == "phase" else DistillationModule
    _stop_at(monkeypatch, 11, module_class)  # in the second epoch (6 batches an epoch)
    with pytest.raises(Stopped):  # Ctrl-C: Lightning stops, the trainer raises Stopped
        run_stage(cfg.copy(), run_dir=tmp_path / "resumed")
    if method == "crd":
        checkpoint = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt",
                                weights_only=True)
        banks = checkpoint["state_dict"]["objective.terms.crd.memory_student"]
        assert banks.shape == (reference["data"]["train"], 128)
        assert batches_done_in_epoch(checkpoint) == 5  # stopped mid-epoch
    resumed = run_stage(cfg.copy(), run_dir=tmp_path / "resumed")
    assert resumed["metrics"] == reference["metrics"]
    if method == "fsp":  # the phase: a run of its own in <run dir>/init, then the labels alone
        phase = resumed["init_phase"]
        assert phase["metrics"] == reference["init_phase"]["metrics"]
        assert phase["status"] == "completed"
        assert phase["run_dir"] == str(tmp_path / "resumed" / "init")
        assert phase["metrics"]["epochs"] == 2 and phase["metrics"]["train/init_loss"] > 0
        assert resumed["distill_terms"] == ["fsp"] and "train/loss_fsp" not in resumed["metrics"]
        phase_record = json.loads((tmp_path / "resumed" / "init" / "summary.json").read_text())
        assert phase_record["stage"] == "distill_init"
        assert run_stage(cfg.copy(), run_dir=tmp_path / "resumed")["metrics"] == \
            resumed["metrics"]  # complete, phase included: skipped
        # a DDP rank (or any later attempt) finds the complete phase and never trains it again
        from lepton_exp.training.init_phase import run_init_phase

        def train(*args, **kwargs):
            raise AssertionError("the complete phase was trained again")

        assert run_init_phase(cfg, train, tmp_path / "resumed")["metrics"] == phase["metrics"]


def test_factor_transfer_without_a_phase_keeps_its_random_paraphraser_fixed():
    from lepton_exp.distill.methods.ft import Term

    term = Term(init_epochs=0)
    maps = Taps(logits=torch.zeros(2, 3), features=[torch.randn(2, 4, 4, 4)])
    term.bind(maps, maps, [(0, 0)])
    assert not any(p.requires_grad for p in term.paraphraser.parameters())
    assert all(p.requires_grad for p in term.translator.parameters())


def test_pre_activation_methods_refuse_transformers_in_one_line():
    from omegaconf import OmegaConf

    from lepton_exp.distill.objective import build_objective
    from lepton_exp.errors import ConfigError

    tokens = Taps(logits=torch.zeros(2, 3), features=[torch.randn(2, 5, 8)] * 3,
                  embedding=torch.randn(2, 8))
    for method in ("ab", "ofd", "reviewkd"):
        cfg = OmegaConf.create({"terms": {method: {}}, "alpha": 1.0, "temperature": 4.0,
                                "warmup_epochs": 0, "schedule": {
                                    "name": "constant", "alpha_final": None,
                                    "temperature_final": None}})
        objective = build_objective(cfg)
        with pytest.raises(ConfigError, match=f"distill term {method} compares CNN feature maps"):
            objective.bind(tokens, tokens, {"student": "auto", "teacher": "auto"})


def test_a_prune_run_refuses_a_methods_initialisation_phase(compose_cfg):
    from lepton_exp.config.validate import validate
    from lepton_exp.errors import ConfigError

    with pytest.raises(ConfigError, match="distill.terms.ab.init_epochs=0"):
        validate(compose_cfg("stage=prune", "prune=magnitude", "distill=ab"))


def test_embedding_methods_need_both_models_embeddings():
    from omegaconf import OmegaConf

    from lepton_exp.distill.objective import build_objective
    from lepton_exp.errors import ConfigError

    with_embedding = Taps(logits=torch.zeros(2, 3), embedding=torch.randn(2, 8))
    without = Taps(logits=torch.zeros(2, 3))
    cfg = OmegaConf.create({"terms": {"crd": {}}, "alpha": 1.0, "temperature": 4.0,
                            "warmup_epochs": 0, "schedule": {
                                "name": "constant", "alpha_final": None,
                                "temperature_final": None}})
    for student, teacher in ((without, with_embedding), (with_embedding, without)):
        with pytest.raises(ConfigError, match="reads the models' embeddings"):
            build_objective(cfg).bind(student, teacher, {"student": "auto", "teacher": "auto"})


def test_crd_bank_takes_the_last_copy_of_a_sample_seen_twice_in_a_step():
    term = _bound_crd()
    before = term.memory_student.clone()
    vectors = torch.nn.functional.normalize(torch.randn(3, 4))
    term._update_banks(torch.tensor([5, 2, 5]), vectors, vectors)
    expected = torch.nn.functional.normalize(before[5] * 0.5 + vectors[2] * 0.5, dim=0)
    assert torch.allclose(term.memory_student[5], expected, atol=1e-6)
    assert torch.allclose(term.memory_student[2], torch.nn.functional.normalize(
        before[2] * 0.5 + vectors[1] * 0.5, dim=0), atol=1e-6)
