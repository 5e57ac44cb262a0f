"""Bad input never gets past the command line as anything but a one-line error."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton_exp.preflight import PreflightError, preflight


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


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
