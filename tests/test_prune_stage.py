"""The prune stage end to end: every prune option for one epoch, measured sparsity that holds
through finetuning, structured pruning that really shrinks the model, the export that
rebuilds without the pruning code, finetuning with distillation, and the CLI sparsity sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lepton_exp.app.runner import run_stage
from lepton_exp.config import CONF_DIR
from lepton_exp.errors import ConfigError
from lepton_exp.measure import compression_report
from lepton_exp.prune.export import load_pruned

FAST = ["data=synthetic", "trainer.max_epochs=1", "logger=none", "model=resnet8",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "teacher.model.name=resnet14", "prune.latency_batch=4"]
# heads and ffn prune transformers: tests/test_text.py runs them.
OPTIONS = sorted(p.stem for p in (CONF_DIR / "prune").glob("*.yaml")
                 if p.stem not in ("none", "heads", "ffn"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")  # one dense model and teacher for the module


@pytest.fixture
def prune_run(compose_cfg, tmp_path, cache_dir):
    def _run(*overrides: str):
        cfg = compose_cfg(*FAST, f"paths.cache_dir={cache_dir}", *overrides)
        run_dir = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        return run_stage(cfg, run_dir=run_dir), run_dir
    return _run


def pruned_layer_sparsity(record: dict) -> dict[str, float]:
    layers = record["compression"]["pruned"]["layer_sparsity"]
    return {name: layers[name] for name in record["prune"]["pruned_layers"]}


def reload(run_dir: Path) -> torch.nn.Module:
    return load_pruned(run_dir / "model.safetensors")


@pytest.mark.parametrize("option", OPTIONS)
def test_every_prune_option_runs_and_records_what_it_measured(prune_run, option):
    record, run_dir = prune_run(f"prune={option}")
    assert record["status"] == "completed" and record["stage"] == "prune"
    metrics = record["metrics"]
    for prefix in ("test_dense", "test_pruned", "test"):  # before, right after, finetuned
        if prefix == "test_pruned" and option == "gradual":  # prunes while finetuning
            assert "test_pruned/acc" not in metrics
            continue
        assert 0.0 <= metrics[f"{prefix}/acc"] <= 1.0
    for key in ("sparsity", "params", "nonzero_params", "dense_bytes", "sparse_bytes", "macs",
                "latency_ms_b1", "latency_ms_b4"):
        assert f"compress/{key}" in metrics and f"compress_dense/{key}" in metrics, key
    assert metrics["compress_dense/sparsity"] == 0.0
    # The record's figures are the exported model's, measured again here from the file.
    model = reload(run_dir)
    again = compression_report(model, torch.randn(1, 3, 16, 16), latency_batch=4)
    for key in ("sparsity", "params", "nonzero_params", "dense_bytes", "sparse_bytes", "macs"):
        assert again[key] == pytest.approx(metrics[f"compress/{key}"], rel=1e-6), key
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    assert record["num_params"] == metrics["compress/params"]


@pytest.mark.parametrize("option", ["magnitude", "random", "gradual"])
def test_unstructured_sparsity_is_exact_after_finetuning(prune_run, option):
    record, run_dir = prune_run(f"prune={option}", "prune.sparsity=0.6",
                                "trainer.max_epochs=2")
    model = dict(reload(run_dir).named_modules())
    for name, sparsity in pruned_layer_sparsity(record).items():
        # torch prunes round(amount * n) weights of each layer: exact within one weight.
        assert sparsity == pytest.approx(0.6, abs=1 / model[name].weight.numel()), name
    assert record["compression"]["pruned"]["layer_sparsity"]["conv1"] == 0.0  # skip: first
    assert record["compression"]["pruned"]["layer_sparsity"]["fc"] == 0.0  # and last


def test_pruned_weights_never_come_back_while_finetuning(prune_run, cache_dir):
    from lepton_exp.models.families.cifar_resnet import CifarResNet  # noqa: F401 - timm names
    from lepton_exp.prune.magnitude import prune_unstructured
    from lepton_exp.prune.targets import prunable_layers

    record, run_dir = prune_run("prune=magnitude", "prune.sparsity=0.5",
                                "trainer.max_epochs=2", "optim.lr=0.5")
    # Re-do the one-shot pruning on the dense model: its zeros must all still be zeros.
    import timm
    from safetensors.torch import load_file

    dense = timm.create_model("resnet8", num_classes=4, in_chans=3)
    dense.load_state_dict(load_file(record["prune"]["dense"]["path"]))
    prune_unstructured(prunable_layers(dense), 0.5)
    final = dict(reload(run_dir).named_modules())
    changed = 0
    for name, module in prunable_layers(dense).items():
        pruned = module.weight_mask == 0
        assert (final[name].weight[pruned] == 0).all(), name
        changed += int((final[name].weight[~pruned] != module.weight[~pruned]).sum())
    assert changed > 0  # finetuning did change the surviving weights


def test_channel_pruning_gives_a_smaller_faster_model_with_the_same_outputs(prune_run):
    record, run_dir = prune_run("prune=channel", "prune.sparsity=0.5")
    metrics = record["metrics"]
    assert metrics["compress/params"] < 0.5 * metrics["compress_dense/params"]
    assert metrics["compress/macs"] < 0.5 * metrics["compress_dense/macs"]
    assert metrics["compress/dense_bytes"] < 0.5 * metrics["compress_dense/dense_bytes"]
    assert metrics["compress/macs_reduction"] == pytest.approx(
        metrics["compress_dense/macs"] / metrics["compress/macs"], rel=1e-3)
    model = reload(run_dir)
    assert model.layer1[0].conv1.out_channels == 8  # resnet8's 16 channels, halved
    assert model(torch.randn(3, 3, 16, 16)).shape == (3, 4)


def test_iterative_rounds_reach_the_requested_sparsity(prune_run):
    record, run_dir = prune_run("prune=magnitude", "prune.rounds=2", "prune.sparsity=0.6",
                                "trainer.max_epochs=2")
    assert record["prune"]["rounds"] == 2
    assert (run_dir / "round1" / "checkpoints").is_dir()  # round 1 finetuned on its own
    assert record["metrics"]["epochs"] == 1  # the last round's epochs (2 epochs / 2 rounds)
    for sparsity in pruned_layer_sparsity(record).values():
        assert sparsity == pytest.approx(0.6, abs=0.01)


def test_iterative_channel_pruning_removes_the_requested_share_of_channels(prune_run):
    record, run_dir = prune_run("prune=channel", "prune.rounds=2", "prune.sparsity=0.5",
                                "trainer.max_epochs=2")
    assert reload(run_dir).layer2[0].conv1.out_channels == 16  # 32 channels, halved in 2 steps


@pytest.mark.parametrize("schedule", [
    ["prune.begin=0.95", "prune.end=1.0", "prune.initial_sparsity=0.2"],  # ends on the last step
    ["trainer.limit_train_batches=1"],  # a single training step
])
def test_gradual_pruning_ends_at_the_final_sparsity_whatever_the_schedule(prune_run, schedule):
    record, run_dir = prune_run("prune=gradual", "prune.sparsity=0.6", *schedule)
    model = dict(reload(run_dir).named_modules())
    for name, sparsity in pruned_layer_sparsity(record).items():
        assert sparsity == pytest.approx(0.6, abs=1 / model[name].weight.numel()), name


def test_gradual_best_checkpoint_is_taken_at_the_final_sparsity(prune_run):
    record, _ = prune_run("prune=gradual", "prune.sparsity=0.7", "prune.end=0.9",
                          "trainer.max_epochs=3", "prune.frequency=1")
    best = torch.load(record["checkpoints"]["best"], map_location="cpu", weights_only=True)
    masks = [v for k, v in best["state_dict"].items() if k.endswith("weight_mask")]
    zeros = sum(int((m == 0).sum()) for m in masks) / sum(m.numel() for m in masks)
    assert zeros == pytest.approx(0.7, abs=0.01)


@pytest.mark.parametrize("source", ["teacher", "dense"])
def test_finetuning_distils_from_the_teacher_or_the_dense_model(prune_run, source):
    record, _ = prune_run("prune=magnitude", "distill=kd", f"prune.teacher={source}")
    assert record["distill_terms"] == ["kd"] and "train/loss_kd" in record["metrics"]
    teacher, = record["teachers"]
    if source == "dense":
        assert teacher["role"] == "dense" and teacher["model"] == "resnet8"
    else:
        assert teacher["model"] == "resnet14" and "role" not in teacher


def test_feature_terms_work_with_a_channel_pruned_student(prune_run):
    record, _ = prune_run("prune=channel", "distill=[kd,fitnet,at]", "prune.teacher=dense")
    assert {"train/loss_fitnet", "train/loss_at"} <= set(record["metrics"])


def test_dense_model_is_trained_once_then_found_in_the_cache_or_given(prune_run):
    first, first_dir = prune_run("prune=random", "seed=1", "prune.dense.seed=7")
    second, _ = prune_run("prune=magnitude", "seed=2", "prune.dense.seed=7")
    assert first["prune"]["dense"]["cache"] == "trained"
    assert second["prune"]["dense"]["cache"] == "hit"
    assert second["metrics"]["test_dense/acc"] == first["metrics"]["test_dense/acc"]
    # A pruned run's export can be pruned further: the file rebuilds its own shapes.
    channel, channel_dir = prune_run("prune=channel", "prune.sparsity=0.25")
    again, _ = prune_run("prune=magnitude",
                         f"prune.dense.checkpoint={channel_dir / 'model.safetensors'}")
    assert again["prune"]["dense"]["kind"] == "checkpoint"
    assert again["metrics"]["compress_dense/params"] == channel["metrics"]["compress/params"]
    # ...but only as the model and data it was made for.
    exported = channel_dir / "model.safetensors"
    for wrong in (["model=resnet14"], ["data.num_classes=6"]):
        with pytest.raises(ConfigError, match=r"is a pruned resnet8 for 4 classes and 3 input "
                                              r"channels.*set model.name=resnet8"):
            prune_run("prune=magnitude", f"prune.dense.checkpoint={exported}", *wrong)


def test_model_kwargs_are_in_the_export_recipe(prune_run):
    record, run_dir = prune_run("prune=channel", "+model.kwargs.widths=[8,8,16,32]")
    assert reload(run_dir).layer3[0].conv1.out_channels == 16  # 32 halved


def test_nested_teacher_and_dense_trainings_are_not_held_to_the_finetuning_rounds(prune_run):
    record, _ = prune_run("prune=magnitude", "prune.rounds=2", "trainer.max_epochs=2",
                          "prune.dense.max_epochs=1", "prune.dense.seed=5", "distill=kd",
                          "teacher.max_epochs=1", "teacher.seed=5")
    assert record["prune"]["dense"]["cache"] == "trained"
    assert record["teachers"][0]["cache"] == "trained"


def test_before_and_after_are_tested_on_the_same_test_batches(prune_run):
    record, _ = prune_run("prune=magnitude", "trainer.limit_test_batches=1",
                          "data.eval_batch_size=8")
    for prefix in ("test_dense", "test_pruned", "test"):  # k of the first 8 images each
        assert (record["metrics"][f"{prefix}/acc"] * 8) == pytest.approx(
            round(record["metrics"][f"{prefix}/acc"] * 8), abs=1e-5), prefix


@pytest.mark.parametrize("overrides,message", [
    (["stage=prune"], "stage=prune needs a prune method: add prune=<method>, one of "),
    (["prune=magnitude", "prune.sparsity=1.0"], r"prune.sparsity=1.0 is out of range"),
    (["prune=magnitude", "prune.scope=everywhere"], "prune.scope=everywhere is not one of"),
    (["prune=channel", "prune.importance=taylor"], "prune.importance=taylor is not one of"),
    (["prune=gradual", "prune.rounds=2"], "prune=gradual is already iterative"),
    (["prune=gradual", "prune.initial_sparsity=0.8"], "prune.initial_sparsity=0.8 is out of"),
    (["prune=magnitude", "prune.rounds=3"], "prune.rounds=3 is more than the 1 finetuning epochs"),
    (["prune=magnitude", "stage=distill"], "prune=magnitude applies to stage=prune"),
    (["prune=magnitude", "prune.finetune_lr=0"], "prune.finetune_lr=0.0 is out of range"),
    (["prune=magnitude", "prune.skip=[layer9.conv]"], "prune.skip names layer9.conv, which is"),
    (["prune=magnitude", "prune.dense.checkpoint=/nope.safetensors"],
     "prune.dense.checkpoint=/nope.safetensors does not exist"),
    (["prune=magnitude", "prune.dense.checkpoint=x.pt", "prune.dense.artifact=a/b/c:v0"],
     "prune.dense.checkpoint and prune.dense.artifact are both set"),
])
def test_bad_prune_settings_are_one_line_errors(prune_run, overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        prune_run(*overrides)
    assert "\n" not in str(error.value)


def test_cli_sparsity_sweep_records_measured_compression_per_run(tmp_path):
    """The issue's command: `prune=channel,magnitude prune.sparsity=0.3,0.5,0.7 -m`."""
    env = {**os.environ, "LEPTON_OUTPUT_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "lepton_exp", *FAST,
               "prune=channel,magnitude", "prune.sparsity=0.3,0.5,0.7", "-m"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in tmp_path.glob("multiruns/*/*/summary.json")]
    assert len(records) == 6 and all(r["status"] == "completed" for r in records)
    by_run = {(r["prune"]["method"], r["prune"]["requested_sparsity"]): r["metrics"]
              for r in records}
    for method in ("channel", "magnitude"):
        params = [by_run[(method, s)]["compress/nonzero_params"] for s in (0.3, 0.5, 0.7)]
        assert params[0] > params[1] > params[2], method  # measured, and it follows the request
        for sparsity in (0.3, 0.5, 0.7):
            metrics = by_run[(method, sparsity)]
            assert metrics["compress/latency_ms_b1"] > 0 and metrics["compress/macs"] > 0
    magnitude_macs = {by_run[("magnitude", s)]["compress/macs"] for s in (0.3, 0.5, 0.7)}
    assert len(magnitude_macs) == 1  # unstructured zeros still cost dense MACs
    assert by_run[("channel", 0.7)]["compress/macs"] < by_run[("channel", 0.3)]["compress/macs"]
    # One dense model, trained by the first job, reused by the other five.
    assert len(list((tmp_path / "cache" / "teachers" / "runs").iterdir())) == 1


def test_wandb_summary_holds_the_compression_report(prune_run):
    record, run_dir = prune_run("prune=magnitude", "logger=wandb")
    run_file, = (run_dir / "wandb").glob("offline-run-*/*.wandb")
    content = run_file.read_bytes()  # protobuf: summary keys appear verbatim
    for key in (b"compress/sparsity", b"compress_dense/latency_ms_b1", b"compress/macs",
                b"compress/layer_sparsity", b"layer1.0.conv1", b"test_pruned/acc"):
        assert key in content, key


def test_a_checkpoint_taken_with_masks_loads_as_the_masked_model(tmp_path):
    from omegaconf import OmegaConf

    from lepton_exp.data.base import DataInfo
    from lepton_exp.models import build_model
    from lepton_exp.prune.magnitude import prune_unstructured
    from lepton_exp.prune.targets import prunable_layers
    from lepton_exp.teachers.load import load_weights

    spec = OmegaConf.create({"name": "resnet8", "pretrained": False, "drop_rate": 0.0,
                             "kwargs": {}})
    info = DataInfo(num_classes=4, in_chans=3, image_size=16)
    model = build_model(spec, info).eval()
    prune_unstructured(prunable_layers(model), 0.5)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}},
               tmp_path / "masked.ckpt")
    plain = build_model(spec, info).eval()
    load_weights(plain, tmp_path / "masked.ckpt", "prune.dense.checkpoint", "model", info)
    images = torch.randn(2, 3, 16, 16)
    assert torch.equal(plain(images), model(images))
