"""Bad input never gets past the command line as anything but a one-line error."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton_exp.config.preflight import PreflightError, preflight


@pytest.mark.parametrize("override", [
    "hydra.launcher._target_=os.system",
    "+hydra.sweeper.sampler._target_=subprocess.Popen",
    "hydra.sweeper._target_=builtins.exec",
])
def test_config_cannot_instantiate_code_outside_the_allow_list(override):
    with pytest.raises(PreflightError, match="may be instantiated from config"):
        preflight([override])


def test_allowed_targets_pass():
    preflight(["hydra/launcher=joblib"])  # hydra_plugins.*: allowed
    preflight(["sweep=tune_kd"])  # optuna sampler + hydra_plugins sweeper


KEYS = ["distill.temperature", "distill.alpha", "prune.sparsity", "optim.lr", "seed",
        "trainer.max_epochs", "data.batch_size", "data.val_size", "model.drop_rate",
        "distill.warmup_epochs", "prune.rounds", "trainer.devices", "trainer.max_epoch",
        "distil.temperature", "data", "model", "distill", "prune", "optim", "logger.mode"]
VALUES = st.one_of(
    st.integers(-5, 300).map(str),
    st.floats(-2, 2, allow_nan=False).map(lambda v: f"{v:.3g}"),
    st.sampled_from(["nan", "inf", "-inf", "abc", "null", "true", "kd", "cifar10", "digits",
                     "resnet8", "magnitude", "[1,2]", "''", "1e-9", "0", "1"]))
OVERRIDES = st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=3,
                     unique_by=lambda kv: kv[0])


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OVERRIDES)
def test_random_overrides_compose_or_fail_with_one_clean_line(pairs):
    overrides = [f"{key}={value}" for key, value in pairs]
    try:
        preflight(overrides)
    except PreflightError as error:  # the only acceptable failure: one line, no trace
        message = str(error)
        assert message and "\n" not in message and "Traceback" not in message


def test_atomic_file_leaves_the_old_file_when_the_writer_dies(tmp_path):
    from lepton_exp.tracking.record import atomic_file

    target = tmp_path / "table.md"
    target.write_text("complete old table\n")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as handle:
            handle.write("half a ta")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "complete old table\n"
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind
    with atomic_file(target) as handle:
        handle.write("new\n")
    assert target.read_text() == "new\n" and list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("flags", [["--config-dir", "EXTRA"], []])
def test_the_allow_list_holds_with_full_errors_and_an_extra_config_dir(tmp_path, flags):
    """HYDRA_FULL_ERROR=1 skips the explanations, not the allow-list; a config from an added
    config directory is checked like the package's own."""
    from test_cli import cli

    extra = tmp_path / "extra" / "hydra" / "launcher"
    extra.mkdir(parents=True)
    (extra / "evil.yaml").write_text("_target_: os.system\n")
    flags = [str(tmp_path / "extra") if f == "EXTRA" else f for f in flags]
    override = "hydra/launcher=evil" if flags else "hydra.launcher._target_=os.system"
    done = cli(*flags, "-m", override, "logger=none", cwd=tmp_path,
               env={"HYDRA_FULL_ERROR": "1", "LEPTON_OUTPUT_DIR": str(tmp_path / "out")})
    assert done.returncode == 2
    assert "may be instantiated from config" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_second_process_on_a_running_directory_is_refused(tmp_path):
    import subprocess
    import sys

    from lepton_exp.errors import ConfigError
    from lepton_exp.tracking.rundir import is_running, run_lock

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from lepton_exp.tracking.rundir import run_lock\n"
        f"with run_lock(__import__('pathlib').Path({str(tmp_path)!r})):\n"
        "    print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert is_running(tmp_path)
        with pytest.raises(ConfigError, match="being run by another process"):
            with run_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert not is_running(tmp_path)  # SIGKILL released it
    with run_lock(tmp_path):
        pass


class _NotAWeight:
    pass


@pytest.mark.parametrize("content", ["truncated", "code"])
def test_a_damaged_or_unsafe_last_checkpoint_is_a_clear_error(tmp_path, compose_cfg, content):
    import torch

    from lepton_exp.app.runner import previous_run
    from lepton_exp.config.identity import to_container
    from lepton_exp.errors import ConfigError
    from lepton_exp.tracking.record import write_json_atomic

    cfg = compose_cfg("data=synthetic")
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}, "extra": _NotAWeight()}
               if content == "code" else {"state_dict": {"w": torch.ones(300)}}, last)
    if content == "truncated":
        last.write_bytes(last.read_bytes()[:200])
    write_json_atomic(tmp_path / "summary.json",
                      {"status": "running", "config": to_container(cfg)})
    with pytest.raises(ConfigError, match="cannot continue from .*last.ckpt.*resume=false"):
        previous_run(cfg, tmp_path, to_container(cfg))


def test_an_interrupted_checkpoint_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """Lightning writes checkpoints through an fsspec transaction (a temporary file renamed
    into place): a write that dies half-way leaves the previous file whole."""
    import fsspec.implementations.local as local
    import pytorch_lightning as pl
    import torch

    trainer = pl.Trainer(logger=False, enable_progress_bar=False, max_epochs=1)
    from pytorch_lightning.demos.boring_classes import BoringModel

    model = BoringModel()
    trainer.strategy.connect(model)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    before = path.read_bytes()

    def dies_half_way(self, data):
        self.f.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local.LocalFileOpener, "write", dies_half_way, raising=False)
    with pytest.raises(OSError):
        trainer.save_checkpoint(path)
    assert path.read_bytes() == before
    torch.load(path, weights_only=True)


def test_a_nan_loss_stops_the_run_names_the_term_and_keeps_the_last_good_checkpoint(
        tmp_path, compose_cfg, monkeypatch):
    import json

    import torch

    from lepton_exp.app.runner import run_stage
    from lepton_exp.training.classify import NonFiniteLossError

    cfg = compose_cfg("data=synthetic", "data.num_samples=300", "trainer.max_epochs=3",
                      "distill=kd", "logger=none", "trainer.enable_progress_bar=false",
                      f"paths.cache_dir={tmp_path / 'cache'}", "checkpoint_every_minutes=null")
    from lepton_exp.distill.methods import kd

    original = kd.kd_loss
    calls = {"count": 0}

    def goes_nan(*args, **kwargs):
        calls["count"] += 1
        value = original(*args, **kwargs)
        return value * float("nan") if calls["count"] > 8 else value  # in epoch 2

    monkeypatch.setattr(kd, "kd_loss", goes_nan)
    with pytest.raises(NonFiniteLossError, match=r"from loss_kd=nan.*last good checkpoint"):
        run_stage(cfg, run_dir=tmp_path / "run")
    record = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert record["status"] == "failed" and "loss_kd=nan" in record["error"]
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] > 0
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values()
               if t.is_floating_point())
