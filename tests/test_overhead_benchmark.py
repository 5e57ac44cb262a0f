"""The overhead benchmark's paired probe runs the command's own entry point in-process."""

from __future__ import annotations

import sys

import pytest

from benchmarks import overhead
from benchmarks.common import Options


def test_the_in_process_command_fails_loudly_and_leaves_argv_as_it_was(tmp_path, monkeypatch):
    monkeypatch.setitem(overhead.PROBES, "tiny", ("a misspelt run", ["trainer.max_epochs=abc"]))
    argv = list(sys.argv)
    options = Options("smoke", tmp_path / "data", tmp_path / "work")
    with pytest.raises(RuntimeError, match="max_epochs"):
        overhead.framework_run_in_process("tiny", options, epochs=1)
    assert sys.argv == argv


def test_the_in_process_command_runs_a_plain_epoch_before_each_of_its_epochs(tmp_path):
    """The plain epochs pair with the run's (one each, before its timer's span), and the
    run's trainer factory is left as it was."""
    from lepton_exp.training import trainer as trainer_module

    build_trainer = trainer_module.build_trainer
    options = Options("smoke", tmp_path / "data", tmp_path)  # (digits: scikit-learn's)
    run = overhead.framework_run_in_process("tiny", options, epochs=3)
    assert len(run["step_ms"]) == len(run["plain_ms"]) == 2
    assert all(ms > 0 for ms in run["step_ms"] + run["plain_ms"])
    assert trainer_module.build_trainer is build_trainer
