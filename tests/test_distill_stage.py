"""The distill stage end to end: every distill option for one epoch, the frozen teacher,
the teacher-output cache, the exported student, and the CLI sweep sharing one teacher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lepton_exp.app.runner import run_stage
from lepton_exp.config import CONF_DIR
from lepton_exp.errors import ConfigError

FAST = ["data=synthetic", "trainer.max_epochs=1", "logger=none",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "teacher.model.name=resnet14"]
# Transformer-only options (hidden states, attention maps) run in tests/test_text.py.
TEXT_ONLY = {"hidden", "embedding", "attn_mse", "attn_kl", "tinybert", "minilm"}
OPTIONS = sorted(p.stem for p in (CONF_DIR / "distill").glob("*.yaml") if p.stem not in TEXT_ONLY)
PHASED = {"ab", "fsp", "ft"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("teacher-cache")  # one teacher for the whole module


@pytest.fixture
def distill(compose_cfg, tmp_path, cache_dir):
    def _run(*overrides: str, stage: str = "distill"):
        cfg = compose_cfg(*FAST, f"stage={stage}", f"paths.cache_dir={cache_dir}", *overrides)
        run_dir = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        return run_stage(cfg, run_dir=run_dir), run_dir
    return _run


@pytest.mark.parametrize("option", OPTIONS)
def test_every_distill_option_trains_one_epoch(distill, option):
    phased = option in PHASED  # an initialisation phase first (one epoch here)
    record, run_dir = distill(f"distill={option}",
                              *([f"distill.terms.{option}.init_epochs=1"] if phased else []))
    assert record["status"] == "completed"
    metrics = record["metrics"]
    terms = record["distill_terms"]
    assert (option == "none") == (terms == [])
    if phased:
        assert record["init_phase"]["metrics"][f"train/init_loss_{option}"] > 0
    for term in terms:  # each term logged on its own, with its weight (AB and FSP: only in
        # their phase; then the student trains on the labels alone, as the CRD code)
        logged = f"train/loss_{term}" in metrics and f"train/weight_{term}" in metrics
        assert logged != (term in ("ab", "fsp"))
    assert "train/loss_ce" in metrics and "train/weight_ce" in metrics
    assert 0.0 <= metrics["test/acc"] <= 1.0
    # The exported student is the student alone: no connector, no teacher.
    exported = load_file(str(run_dir / "model.safetensors"))
    assert not any(k.startswith(("objective", "teachers", "connectors")) for k in exported)
    assert record["num_params"] == sum(v.numel() for k, v in exported.items()
                                       if not k.endswith(("running_mean", "running_var",
                                                          "num_batches_tracked")))


@pytest.mark.parametrize("overrides", [
    ["distill=[kd,fitnet]"],
    ["distill=[dkd,at]"],
    ["distill=kd", "distill.terms.kd.hard=true"],
    ["distill=kd", "distill.schedule.name=cosine", "distill.schedule.temperature_final=1",
     "distill.schedule.alpha_final=0.5", "distill.warmup_epochs=0.5"],
    ["distill=at", "distill.layers.student=[2,3]", "distill.layers.teacher=[1,3]"],
], ids=["kd+fitnet", "dkd+at", "hard-kd", "schedules", "explicit-layers"])
def test_combinations_and_variants_train(distill, overrides):
    record, _ = distill(*overrides)
    assert record["status"] == "completed"


def test_scheduled_weights_reach_the_loggers_every_step(compose_cfg, tmp_path, cache_dir):
    """A warm-up or schedule makes the weights and the temperature floats that change every
    step: they go to the loggers with the losses (a float once failed that, at the first
    logging step of any run with a logger)."""
    fast = [override for override in FAST if override != "logger=none"]
    cfg = compose_cfg(*fast, "logger=csv", "stage=distill", "trainer.log_every_n_steps=1",
                      f"paths.cache_dir={cache_dir}", "distill=dkd", "distill.warmup_epochs=0.5")
    record = run_stage(cfg, run_dir=tmp_path / "run")
    assert record["status"] == "completed"
    (metrics_file,) = (tmp_path / "run").rglob("metrics.csv")
    header = metrics_file.read_text().splitlines()[0].split(",")
    assert {"train/weight_dkd_step", "train/temperature_step", "train/loss_dkd_step"} <= set(
        header)


def test_kd_logs_both_weights_and_alpha_schedule_ends_at_its_final_value(distill):
    record, _ = distill("distill=kd", "distill.schedule.name=linear",
                        "distill.schedule.alpha_final=0.5", "trainer.max_epochs=2")
    metrics = record["metrics"]
    # Epoch means of the last epoch lie between the start (0.1) and the final value (0.5).
    assert 0.1 < metrics["train/weight_ce"] < 0.5
    assert metrics["train/weight_kd"] == pytest.approx(1 - metrics["train/weight_ce"], rel=1e-5)


def test_multi_teacher_distillation_uses_each_teacher_with_its_weight(distill):
    record, _ = distill("distill=kd", "teacher.weight=3",
                        "extra_teachers=[{model: {name: resnet8}, weight: 1}]")
    teachers = record["teachers"]
    assert [t["model"] for t in teachers] == ["resnet14", "resnet8"]
    assert [t["weight"] for t in teachers] == pytest.approx([0.75, 0.25])


def test_multi_teacher_feature_terms_with_the_output_cache(distill):
    # Feature terms read the first teacher; the cache stores only its features, so teachers
    # with different tap counts (timm resnet18: 5, CIFAR resnet8: 4) combine.
    record, _ = distill("distill=kd_at", "extra_teachers=[{model: {name: resnet18}}]")
    assert record["teacher_output_cache"]["enabled"] is True
    assert record["status"] == "completed"


def test_pipeline_with_a_given_teacher_checkpoint_tests_it_instead_of_training_one(
        compose_cfg, tmp_path, cache_dir):
    from lepton_exp.teachers.cache import ensure_cached, teacher_run_config

    base = [*FAST, f"paths.cache_dir={cache_dir}"]
    entry, _ = ensure_cached(teacher_run_config(compose_cfg(*base), compose_cfg(*base).teacher),
                             run_stage)
    fresh = tmp_path / "other-cache"
    overrides = ["experiment=quickstart", *FAST, f"paths.cache_dir={fresh}",
                 f"teacher.checkpoint={entry / 'model.safetensors'}"]
    from lepton_exp.app.run import run

    record = run(compose_cfg(*overrides), run_dir=tmp_path / "pipe", overrides=overrides)
    teacher = record["steps"]["teacher"]
    assert teacher["teacher_cache"] == "checkpoint" and "test/acc" in teacher["metrics"]
    assert record["steps"]["kd"]["teacher_cache"] == "checkpoint"
    assert not (fresh / "teachers").exists()
    assert record["git"] and record["versions"]["torch"] and record["config"]["name"]


def test_teacher_stays_frozen_in_eval_mode_with_bn_statistics_untouched(compose_cfg, tmp_path,
                                                                        cache_dir):
    from lepton_exp.app.runner import run_stage
    from lepton_exp.data import build_datamodule
    from lepton_exp.stages import StageContext
    from lepton_exp.stages.distill import STAGE

    cfg = compose_cfg(*FAST, "distill=kd_at", f"paths.cache_dir={cache_dir}",
                      "trainer.max_epochs=2")
    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    prepared = STAGE.prepare(cfg, datamodule, run_stage, tmp_path)
    teachers = prepared.teachers
    before = {k: v.clone() for k, v in teachers[0].model.state_dict().items()}
    STAGE.run(StageContext(cfg, tmp_path, datamodule, [], prepared))
    after = teachers[0].model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not teachers[0].model.training
    assert not any(p.requires_grad for p in teachers[0].model.parameters())
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any(k.startswith("teachers.") for k in checkpoint["state_dict"])
    assert any(k.startswith("objective.") for k in checkpoint["state_dict"]) is False  # at/kd


def test_teacher_output_cache_changes_speed_not_results(distill):
    cached, _ = distill("distill=kd_at", "trainer.max_epochs=2")
    uncached, _ = distill("distill=kd_at", "trainer.max_epochs=2",
                          "distill.cache_teacher_outputs=false")
    assert cached["teacher_output_cache"]["enabled"] is True
    assert uncached["teacher_output_cache"] == {"enabled": False, "reason": "disabled"}
    # No sample went through the teacher twice; drop_last may leave a few never drawn.
    stats, samples = cached["teacher_output_cache"], cached["data"]["train"]
    assert stats["teacher_forwards"] == stats["samples_stored"]
    assert samples - cached["config"]["data"]["batch_size"] < stats["samples_stored"] <= samples
    for key in ("test/acc", "test/loss", "train/loss_kd", "train/loss_at"):
        assert cached["metrics"][key] == pytest.approx(uncached["metrics"][key], rel=1e-5), key


def test_teacher_output_cache_refuses_augmented_inputs(distill, cifar10_dir):
    subsets = ["data.train_subset=200", "data.val_subset=100", "data.test_subset=100"]
    with pytest.raises(ConfigError, match="needs a deterministic training transform"):
        distill("distill=kd", "data=cifar10", f"data.root={cifar10_dir}", *subsets,
                "distill.cache_teacher_outputs=true", "data.augment=true")
    record, _ = distill("distill=kd", "data=cifar10", f"data.root={cifar10_dir}", *subsets,
                        "data.augment=true", "trainer.limit_train_batches=1")
    assert record["teacher_output_cache"] == {"enabled": False, "reason": "augmentation"}


def test_student_initialised_from_the_teacher(distill):
    record, _ = distill("distill=kd", "model=resnet8", "teacher.model.name=resnet14",
                        "distill.student_init=teacher")
    init = record["student_init"]
    assert init["fraction_copied"] == 1.0  # resnet8 = every other block of resnet14's stages


def test_incompatible_student_and_teacher_fail_before_the_teacher_is_trained(distill,
                                                                            tmp_path):
    cache = tmp_path / "fresh-cache"
    with pytest.raises(ConfigError, match=r"student_init=teacher: only \d+% of the student"):
        distill("distill=kd", "model=mobilenetv3_small_100", "distill.student_init=teacher",
                f"paths.cache_dir={cache}")
    with pytest.raises(ConfigError, match="teacher tap 9|the teacher has taps"):
        distill("distill=at", "distill.layers.student=[3]", "distill.layers.teacher=[9]",
                f"paths.cache_dir={cache}")
    assert not (cache / "teachers").exists()  # no teacher was trained for nothing


def test_teacher_stage_runs_publish_to_the_cache_that_distillation_reads(distill, cache_dir):
    teacher_record, _ = distill("model=resnet14", "seed=0", stage="teacher")
    student_record, _ = distill("distill=kd")
    teacher, = student_record["teachers"]
    assert teacher["key"] == teacher_record["teacher_cache"]["key"]
    assert teacher["cache"] == "hit"


def test_unpaired_feature_taps_fail_before_training_naming_the_fix(distill):
    with pytest.raises(ConfigError, match=r"the student has taps 0\.\.3"):
        distill("distill=at", "distill.layers.student=[4]", "distill.layers.teacher=[3]")


def cli(*args: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "lepton_exp", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_temperature_sweep_gives_tracked_runs_that_share_one_teacher(tmp_path):
    """The issue's `-m distill=none,kd distill.temperature=...`: runs named after what the
    sweep varies, one teacher for all, and the student alone trained once (its T is unread)."""
    done = cli("-m", "distill=none,kd_at", "distill.temperature=1,8", *FAST[:-1], "logger=csv",
               f"paths.cache_dir={tmp_path / 'cache'}", f"paths.output_dir={tmp_path}",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    # in the order the jobs ran (their directories are named by content, not number)
    records = sorted((json.loads(p.read_text()) for p in
                      (tmp_path / "multiruns").glob("*/*/summary.json")),
                     key=lambda r: r["started_at"])
    alone = [r for r in records if r["stage"] == "teacher"]
    records = [r for r in records if r["stage"] == "distill"]
    assert [r["name"] for r in records] == ["distill-kd+at-T1-resnet8-synthetic",
                                            "distill-kd+at-T8-resnet8-synthetic"]
    assert [r["config"]["distill"]["temperature"] for r in records] == [1.0, 8.0]
    assert all(r["status"] == "completed" for r in records + alone)
    assert [r["name"] for r in alone] == ["distill-none-resnet8-synthetic"] * 2
    # trained once: one record points to the other (started_at has whole seconds: no order)
    (pointer,), (original,) = ([r for r in alone if r.get("same_as")],
                               [r for r in alone if not r.get("same_as")])
    assert pointer["same_as"] == original["run_dir"]
    assert pointer["metrics"] == original["metrics"]
    assert not (Path(pointer["run_dir"]) / "checkpoints").exists()
    assert [r["teachers"][0]["cache"] for r in records] == ["trained", "hit"]
    assert len({r["teachers"][0]["key"] for r in records}) == 1
    assert len(list((tmp_path / "cache" / "teachers" / "runs").iterdir())) == 1
    for record in records:  # per-term losses in each run's own log
        header = (Path(record["run_dir"]) / "csv").rglob("metrics.csv")
        columns = next(header).read_text().splitlines()[0].split(",")
        # losses every step and per epoch; constant weights once an epoch
        assert {"train/loss_kd_epoch", "train/loss_at_epoch",
                "train/weight_kd"} <= set(columns)
        assert "train/weight_kd_step" not in columns


def test_cli_bad_distill_input_is_one_line(tmp_path):
    done = cli("distill=kd", "distill.alpha=1.5", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "lepton-exp: error: distill.alpha=1.5 is out of range: it must be in [0, 1]"]
    done = cli("distill=kd", "+distill.terms.kd.temprature=2", cwd=tmp_path)
    assert done.returncode == 2 and "unknown option distill.terms.kd.temprature" in done.stderr


@pytest.mark.parametrize("option,message", [
    ("hidden", "distill term hidden needs token sequences"),
    ("attn_kl", "distill term attn_kl needs attention maps, which only transformers have"),
])
def test_transformer_terms_on_a_cnn_are_one_line_errors(distill, option, message):
    with pytest.raises(ConfigError, match=message):
        distill(f"distill={option}")
