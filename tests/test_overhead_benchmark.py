"""The overhead benchmark's paired probe runs the command's own entry point in-process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks import overhead
from benchmarks.common import Options


def test_the_in_process_command_fails_loudly_and_leaves_argv_as_it_was(tmp_path, monkeypatch):
    # (a config error stops it before torch or Lightning load: nothing else to leave behind)
    monkeypatch.setitem(overhead.PROBES, "tiny", ("a misspelt run", ["trainer.max_epochs=abc"]))
    argv = list(sys.argv)
    options = Options("smoke", tmp_path / "data", tmp_path / "work")
    with pytest.raises(RuntimeError, match="max_epochs"):
        overhead.framework_run_in_process("tiny", options, epochs=1)
    assert sys.argv == argv


def test_the_in_process_command_runs_a_plain_epoch_before_each_of_its_epochs(tmp_path):
    """The plain epochs pair with the run's (one each, before its timer's span), and the
    trainer factory and the variables the benchmark sets are left as they were. In a
    process of its own, as the benchmark runs it: the command leaves its settings behind."""
    code = """
import json, os, sys
from pathlib import Path
from benchmarks import overhead
from benchmarks.common import Options
from lepton_exp.training import trainer as trainer_module
options = Options("smoke", Path(sys.argv[1]) / "data", Path(sys.argv[1]))
ours = list(overhead._run_env("tiny", options))  # the variables the benchmark sets
os.environ["LEPTON_DATA_DIR"] = "/elsewhere"
build_trainer, environment = trainer_module.build_trainer, {n: os.environ.get(n) for n in ours}
run = overhead.framework_run_in_process("tiny", options, epochs=3)
print(json.dumps({**run, "restored": trainer_module.build_trainer is build_trainer
                  and {n: os.environ.get(n) for n in ours} == environment}))
"""
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=overhead.REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(run["step_ms"]) == len(run["plain_ms"]) == 2  # epochs 1 and 2
    assert all(ms > 0 for ms in run["step_ms"] + run["plain_ms"])
    assert run["restored"]
