"""Teacher stage end to end, in process: fit, test last/best, run record, W&B offline run."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest
import torch

from lepton_exp.app.runner import run_stage
from lepton_exp.errors import ConfigError

FAST = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false"]


@pytest.fixture
def run(compose_cfg, tmp_path):
    def _run(*overrides: str, run_dir: Path | None = None):
        cfg = compose_cfg(*FAST, *overrides)
        target = run_dir or tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        return run_stage(cfg, run_dir=target), target

    return _run


def _test_accuracy(checkpoint: str, record: dict) -> float:
    """Accuracy of a saved checkpoint on the test split, recomputed outside Lightning from
    the run record's config."""
    from omegaconf import OmegaConf

    from lepton_exp.data import build_datamodule
    from lepton_exp.models import build_model

    cfg = OmegaConf.create(record["config"])
    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    model = build_model(cfg.model, datamodule.info)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()
                           if k.startswith("model.")})
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in datamodule.test_dataloader():
            correct += (model(images).argmax(1) == labels).sum().item()
    return correct / len(datamodule.test)


def test_one_epoch_on_synthetic_writes_a_complete_run_record(run):
    record, run_dir = run("data=synthetic", "model=resnet8")
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(record, default=str))
    assert record["status"] == "completed" and record["stage"] == "teacher"
    assert record["seed"] == 0
    for key in ("test/acc", "test/loss", "test_best/acc", "val/acc", "val/acc_best",
                "train/loss"):
        assert isinstance(record["metrics"][key], float), key
    assert 0.0 <= record["metrics"]["test/acc"] <= 1.0
    assert record["metrics"]["epochs"] == 1
    assert record["num_params"] > 0 and record["model_size_bytes"] >= 4 * record["num_params"]
    assert record["wall_time_s"] > 0
    # throughput: the samples of the training epochs (the last, partial batch dropped) over
    # their time, validation left out
    timing, batch = record["timing"], record["config"]["data"]["batch_size"]
    assert timing["train_samples"] == record["data"]["train"] // batch * batch
    assert len(timing["epoch_s"]) == 1 and 0 < timing["train_s"] < record["wall_time_s"]
    assert timing["train_samples_per_s"] == pytest.approx(
        timing["train_samples"] / timing["train_s"], rel=1e-2)
    assert set(record["git"]) == {"commit", "dirty"}
    assert record["versions"]["torch"] == metadata.version("torch")
    assert record["config"]["trainer"]["max_epochs"] == 1  # resolved config, not the yaml
    assert record["config"]["data"]["name"] == "synthetic"
    assert Path(record["checkpoints"]["last"]).exists()
    assert Path(record["checkpoints"]["best"]).exists()
    # Recorded test accuracy is what the last checkpoint really scores.
    assert record["metrics"]["test/acc"] == pytest.approx(
        _test_accuracy(record["checkpoints"]["last"], record), abs=1e-6)


def test_wandb_offline_run_directory_and_flat_config(run):
    record, run_dir = run("data=synthetic", "logger=wandb", "tags=[unit]")
    wandb_dir = Path(record["wandb"]["dir"])
    assert record["wandb"]["mode"] == "offline"
    assert wandb_dir.is_dir() and wandb_dir.parent == run_dir / "wandb"
    assert wandb_dir.name.startswith("offline-run-")
    run_files = list(wandb_dir.glob("*.wandb"))
    assert run_files, "no W&B run file written"
    # The offline run file is protobuf; config keys and summary metrics appear verbatim.
    content = run_files[0].read_bytes()
    for key in (b"trainer.max_epochs", b"data.name", b"optim.lr", b"test/acc", b"unit"):
        assert key in content, key


def test_wandb_run_gets_flat_config_group_job_type_and_tags(compose_cfg, tmp_path):
    from lepton_exp.config.identity import flatten, to_container
    from lepton_exp.tracking.loggers import build_loggers, finish_loggers

    cfg = compose_cfg("data=synthetic", "logger.group=sweep-7", "tags=[a,b]", "distill=kd_at",
                      "prune=magnitude")
    (logger,) = build_loggers(cfg, tmp_path, flatten(to_container(cfg)))
    run = logger.experiment
    try:
        assert run.config["trainer.max_epochs"] == cfg.trainer.max_epochs
        assert run.config["data.name"] == "synthetic"
        assert run.group == "sweep-7" and run.job_type == "prune"
        # the configured tags, then what an ablation is filtered by
        assert list(run.tags) == ["a", "b", "stage:prune", "model:resnet8", "data:synthetic",
                                  "distill:at+kd", "prune:magnitude"]
    finally:
        finish_loggers([logger], {})


def test_one_epoch_on_digits(run):
    record, _ = run("data=digits", "model=resnet8", "logger=none")
    assert record["data"]["train"] + record["data"]["val"] + record["data"]["test"] == 1797
    assert record["metrics"]["test_best/acc"] == pytest.approx(
        _test_accuracy(record["checkpoints"]["best"], record), abs=1e-6)


def test_same_seed_same_metrics_other_seed_differs(run):
    common = ("data=synthetic", "logger=none", "trainer.max_epochs=2")
    first, _ = run(*common, "seed=3")
    again, _ = run(*common, "seed=3")
    other, _ = run(*common, "seed=4")
    assert first["metrics"] == again["metrics"]
    assert first["metrics"]["train/loss"] != other["metrics"]["train/loss"]


def test_top5_is_reported_with_more_than_ten_classes(run):
    record, _ = run("data=synthetic", "data.num_classes=12", "data.num_samples=240",
                    "logger=none")
    assert 0 <= record["metrics"]["test/acc_top5"] <= 1
    assert record["metrics"]["test/acc_top5"] >= record["metrics"]["test/acc"]


def test_csv_logger_writes_metrics(run):
    record, run_dir = run("data=synthetic", "logger=csv")
    assert record["wandb"] is None
    assert "val/acc" in (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]


def test_invalid_trainer_setting_is_a_config_error(run):
    with pytest.raises(ConfigError, match="invalid trainer settings"):
        run("data=synthetic", "logger=none", "trainer.devices=abc")


def test_failed_run_still_leaves_a_record(run, tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        run("data=cifar10", f"data.root={tmp_path / 'missing'}", "logger=none",
            run_dir=tmp_path / "failed")
    record = json.loads((tmp_path / "failed" / "summary.json").read_text())
    assert record["status"] == "failed" and "data.root" in record["error"]


def test_quickstart_pipeline_trains_teacher_once_then_students_then_prunes_the_kd_student(
        compose_cfg, tmp_path):
    overrides = ["experiment=quickstart", "logger=none", "trainer.enable_progress_bar=false",
                 f"paths.cache_dir={tmp_path / 'cache'}"]
    from lepton_exp.app.run import run

    record = run(compose_cfg(*overrides), run_dir=tmp_path / "quickstart",
                       overrides=overrides)
    on_disk = json.loads((tmp_path / "quickstart" / "summary.json").read_text())
    assert on_disk["status"] == record["status"] == "completed"
    steps = record["steps"]
    assert list(steps) == ["teacher", "student", "kd", "prune"]
    assert steps["teacher"]["teacher_cache"] == "trained"
    assert steps["student"]["distill_terms"] == [] and steps["kd"]["distill_terms"] == ["kd"]
    for name, step in steps.items():
        assert step["status"] == "completed", name
        assert step["metrics"]["test/acc"] >= 0.95, name
    assert steps["teacher"]["num_params"] > steps["kd"]["num_params"] == steps["student"][
        "num_params"]
    kd_record = json.loads((tmp_path / "quickstart" / "kd" / "summary.json").read_text())
    teacher, = kd_record["teachers"]
    assert teacher["cache"] == "hit"  # the teacher step's teacher: trained once
    assert teacher["metrics"]["test/acc"] == steps["teacher"]["metrics"]["test/acc"]
    assert len(list((tmp_path / "cache" / "teachers" / "runs").iterdir())) == 1
    # The prune step starts from the kd step's exported student and finetunes with KD.
    prune_record = json.loads((tmp_path / "quickstart" / "prune" / "summary.json").read_text())
    assert prune_record["prune"]["dense"]["path"] == str(tmp_path / "quickstart" / "kd" /
                                                          "model.safetensors")
    assert prune_record["metrics"]["test_dense/acc"] == pytest.approx(
        steps["kd"]["metrics"]["test_best/acc"], abs=1e-6)  # the kd step's exported weights
    assert prune_record["teachers"][0]["cache"] == "hit" and steps["prune"]["distill_terms"] == [
        "kd"]
    from lepton_exp.measure import sparsity_report
    from lepton_exp.prune.export import load_pruned

    exported = load_pruned(tmp_path / "quickstart" / "prune" / "model.safetensors")
    assert steps["prune"]["metrics"]["compress/sparsity"] == pytest.approx(
        sparsity_report(exported)["sparsity"], abs=1e-6)  # measured on the exported model
    assert 0.4 < steps["prune"]["metrics"]["compress/sparsity"] < 0.5  # first/last kept dense
    assert steps["prune"]["metrics"]["test/acc"] >= 0.9


def test_wandb_failure_falls_back_to_csv_and_the_run_goes_on(run, monkeypatch, caplog):
    import pytorch_lightning.loggers as loggers

    class Broken:
        def __init__(self, *args, **kwargs):
            raise TimeoutError("wandb init timed out")

    monkeypatch.setattr(loggers, "WandbLogger", Broken)
    record, run_dir = run("data=synthetic", "logger=wandb")
    assert record["status"] == "completed" and record["wandb"] is None
    assert (run_dir / "csv" / "metrics.csv").exists()
    assert "W&B could not start (TimeoutError: wandb init timed out)" in caplog.text


def test_last_checkpoint_is_the_final_epoch_and_best_is_the_best(run):
    # Near-noiseless synthetic data: val/acc saturates early, so the best epoch (first to
    # reach the maximum) comes before the final one and the two checkpoints must differ.
    record, _ = run("data=synthetic", "data.noise=0.05", "logger=none", "trainer.max_epochs=4")
    last = torch.load(record["checkpoints"]["last"], map_location="cpu", weights_only=True)
    best = torch.load(record["checkpoints"]["best"], map_location="cpu", weights_only=True)
    assert last["epoch"] == 3 and last["global_step"] == record["metrics"]["global_step"]
    assert best["epoch"] < last["epoch"], "setup should make an earlier epoch the best"
    assert record["metrics"]["test/acc"] == pytest.approx(
        _test_accuracy(record["checkpoints"]["last"], record), abs=1e-6)
    assert record["metrics"]["test_best/acc"] == pytest.approx(
        _test_accuracy(record["checkpoints"]["best"], record), abs=1e-6)


def test_model_kwargs_the_model_does_not_take_is_a_config_error(run):
    with pytest.raises(ConfigError, match="cannot build model 'resnet8'.*unexpected keyword"):
        run("data=synthetic", "logger=none", "+model.kwargs.wings=2")


def test_last_checkpoint_is_final_even_when_validation_skips_epochs(run):
    record, _ = run("data=synthetic", "logger=none", "trainer.max_epochs=3",
                    "trainer.check_val_every_n_epoch=2")
    last = torch.load(record["checkpoints"]["last"], map_location="cpu", weights_only=True)
    best = torch.load(record["checkpoints"]["best"], map_location="cpu", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == record["metrics"]["global_step"]
    assert best["epoch"] == 1  # the only validated epoch
    assert record["metrics"]["test/acc"] == pytest.approx(
        _test_accuracy(record["checkpoints"]["last"], record), abs=1e-6)


@pytest.mark.filterwarnings("ignore:.*could not find the monitored key")  # expected here
def test_without_validation_there_is_no_best_checkpoint(run):
    record, _ = run("data=synthetic", "logger=none", "trainer.limit_val_batches=0")
    assert record["checkpoints"]["best"] is None and "test_best/acc" not in record["metrics"]
    assert Path(record["checkpoints"]["last"]).exists() and "test/acc" in record["metrics"]


def test_train_timer_leaves_validation_out_of_the_training_time():
    import time

    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from lepton_exp.training.timing import TrainTimer

    class Slow(pl.LightningModule):  # training is fast, validation sleeps 0.2 s a batch
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def validation_step(self, batch, batch_idx):
            time.sleep(0.2)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = TensorDataset(torch.randn(40, 4))
    timer = TrainTimer()
    trainer = pl.Trainer(max_epochs=2, val_check_interval=0.5, num_sanity_val_steps=2,
                         callbacks=[timer], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Slow(), DataLoader(data, batch_size=8), DataLoader(data, batch_size=20))
    # 2 epochs x 2 validations x 2 batches x 0.2 s (+ the sanity check) slept outside
    summary = timer.summary()
    assert summary["train_samples"] == 2 * 40 and len(summary["epoch_s"]) == 2
    assert summary["train_s"] < 0.5, summary
