"""W&B failing during a run (a full disk under wandb/, a dead service) or while closing it never
fails the run: the rest goes to CSV in <run_dir>/csv, said once; a W&B run can be resumed by id."""

from __future__ import annotations

import csv
import errno
import json
import logging

import pytest
import wandb
from wandb.sdk.wandb_run import Run
from wandb.sdk.wandb_summary import SummaryDict

from lepton_exp.app.runner import run_stage
from lepton_exp.config.identity import flatten, to_container
from lepton_exp.tracking import loggers as tracking

FAST = ["data=synthetic", "model=resnet8", "logger=wandb", "trainer.max_epochs=1",
        "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", "trainer.log_every_n_steps=2",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false"]
FALLBACK = "continues to CSV"


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def wandb_runs(monkeypatch):
    """The W&B runs the test started; the ones a failure left open are finished afterwards
    with W&B's own methods, so the next test starts clean."""
    started: list[Run] = []
    original_init = Run.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        started.append(self)

    monkeypatch.setattr(Run, "__init__", init)
    original_finish = Run.finish
    yield started
    for run in started:
        if not run._is_finished:
            try:
                original_finish(run)
            except Exception:  # noqa: BLE001 - cleanup only
                pass
    assert wandb.run is None


def warnings_with(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and text in r.getMessage()]


def test_disk_full_mid_run_continues_to_csv_and_says_so_once(
        compose_cfg, tmp_path, monkeypatch, caplog, wandb_runs):
    calls = {"log": 0, "finish": 0}
    original_log, original_finish = Run.log, Run.finish

    def log(self, *args, **kwargs):
        calls["log"] += 1
        if calls["log"] == 1:
            return original_log(self, *args, **kwargs)
        raise disk_full()

    def finish(self, *args, **kwargs):
        calls["finish"] += 1
        return original_finish(self, *args, **kwargs)

    monkeypatch.setattr(Run, "log", log)
    monkeypatch.setattr(Run, "finish", finish)
    caplog.set_level(logging.WARNING)
    run_dir = tmp_path / "run"
    # Two epochs: the learning-rate monitor logs at each epoch's start, W&B's first call.
    record = run_stage(compose_cfg(*FAST, "trainer.max_epochs=2"), run_dir=run_dir)

    assert record["status"] == "completed"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    # W&B was called once more (the failing call), then never again: not even to finish.
    assert calls == {"log": 2, "finish": 0}
    (warning,) = warnings_with(caplog, FALLBACK)
    assert "No space left on device" in warning and str(run_dir / "csv") in warning
    assert not warnings_with(caplog, "W&B could not")
    # The run record says where the W&B run is and that it stopped early.
    assert record["wandb"]["id"] == wandb_runs[0].id
    assert "No space left on device" in record["wandb"]["failed"]
    assert record["wandb"]["fallback"] == str(run_dir / "csv")
    # The epoch's metrics (logged after the failure) are in the CSV fallback.
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    val_acc = [float(row["val/acc"]) for row in rows if row.get("val/acc")]
    assert len(val_acc) == record["metrics"]["epochs"]
    assert val_acc[-1] == pytest.approx(record["metrics"]["val/acc"])
    assert any(row.get("test/acc") for row in rows)
    # Lightning's learning-rate monitor and checkpoints worked through the logger.
    assert any(value for row in rows for key, value in row.items() if key.startswith("lr"))
    assert all(record["checkpoints"].values())


@pytest.mark.parametrize("failing", ["summary", "finish"])
def test_failure_closing_the_wandb_run_does_not_fail_the_run_nor_leak_into_the_next(
        compose_cfg, tmp_path, monkeypatch, caplog, wandb_runs, failing):
    def broken(self, *args, **kwargs):
        raise RuntimeError("wandb service is gone")

    caplog.set_level(logging.WARNING)
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        if failing == "summary":
            patch.setattr(SummaryDict, "update", broken)
        else:
            patch.setattr(Run, "finish", broken)
        record = run_stage(compose_cfg(*FAST), run_dir=run_dir)

    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert record["status"] == on_disk["status"] == "completed"
    assert on_disk["metrics"] == json.loads(json.dumps(record["metrics"]))
    assert len(warnings_with(caplog, "wandb service is gone")) == 1
    assert wandb.run is None  # the broken run is let go, without calling it again
    # The next run in this process (a sweep) gets a W&B run of its own, not the broken one.
    cfg = compose_cfg(*FAST)
    (logger,) = tracking.build_loggers(cfg, tmp_path / "next", flatten(to_container(cfg)))
    assert logger.experiment.id != record["wandb"]["id"]
    assert [run.id for run in wandb_runs] == [record["wandb"]["id"], logger.experiment.id]
    tracking.finish_loggers([logger], {})


def test_logger_falls_back_once_and_never_calls_wandb_again(
        compose_cfg, tmp_path, monkeypatch, caplog, wandb_runs):
    cfg = compose_cfg("data=synthetic", "logger=wandb")
    (logger,) = tracking.build_loggers(cfg, tmp_path, flatten(to_container(cfg)))
    assert isinstance(logger, tracking.SafeWandbLogger)
    calls = []

    def log(self, *args, **kwargs):
        calls.append(args)
        raise disk_full()

    monkeypatch.setattr(Run, "log", log)
    monkeypatch.setattr(Run, "watch", log)
    caplog.set_level(logging.WARNING)
    logger.log_hyperparams({"lr": 0.1})
    for step in range(3):
        logger.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
        logger.save()
    logger.watch(None)
    logger.finalize("success")
    assert len(calls) == 1 and len(warnings_with(caplog, FALLBACK)) == 1
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",") == ["step", "train/loss"] and len(rows) == 4  # all three steps
    assert "lr: 0.1" in (tmp_path / "csv" / "hparams.yaml").read_text()  # logged before
    tracking.finish_loggers([logger], {"test/acc": 0.5})
    assert logger.failure.startswith("logging metrics (OSError")


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_interrupts_are_not_swallowed(compose_cfg, tmp_path, monkeypatch, wandb_runs,
                                      interrupt):
    cfg = compose_cfg("data=synthetic", "logger=wandb")
    (logger,) = tracking.build_loggers(cfg, tmp_path, flatten(to_container(cfg)))

    def log(self, *args, **kwargs):
        raise interrupt()

    with monkeypatch.context() as patch, pytest.raises(interrupt):
        patch.setattr(Run, "log", log)
        logger.log_metrics({"train/loss": 1.0}, step=0)
    assert logger.failure is None and logger.fallback is None
    tracking.finish_loggers([logger], {})


def test_resume_id_continues_the_same_wandb_run(compose_cfg, tmp_path, wandb_runs):
    cfg = compose_cfg("data=synthetic", "logger=wandb")
    flat = flatten(to_container(cfg))
    ids = []
    for resume_id in ("lepton7resume1", "lepton7resume1", None):
        (logger,) = tracking.build_loggers(cfg, tmp_path, flat, resume_id=resume_id)
        ids.append(logger.experiment.id)
        assert tracking.wandb_run_info([logger])["id"] == ids[-1]
        tracking.finish_loggers([logger], {})
        assert wandb.run is None  # each build starts a run of its own, not a leftover
    assert ids[0] == ids[1] == "lepton7resume1" != ids[2]
    for name in ("csv", "none"):  # the other loggers take the id and ignore it
        other = compose_cfg("data=synthetic", f"logger={name}")
        tracking.build_loggers(other, tmp_path / name, flat, resume_id="lepton7resume1")
