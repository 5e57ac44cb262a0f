"""Ctrl-C and SIGTERM on the real command line: the documented exit code (130, 143), one line,
``interrupted`` in the record, and the same command continuing to the metrics of a run that
was never stopped, wherever the signal came (inside a training step, validation, testing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_cli import EXE, own_environment

STOP_CLI = str(Path(__file__).with_name("stop_cli.py"))
TINY = ["data=synthetic", "data.num_samples=600", "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "logger=none", "model.drop_rate=0.3"]  # dropout: the global RNG matters


def _run(tmp_path: Path, outputs: str, *args: str, stop: tuple = ()):
    command = [sys.executable, STOP_CLI, *map(str, stop), *args] if stop else [EXE, *args]
    env = own_environment(LEPTON_OUTPUT_DIR=str(tmp_path / outputs),
                          LEPTON_CACHE_DIR=str(tmp_path / "cache"))
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=env)


def _record(tmp_path: Path, outputs: str) -> dict:
    records = list((tmp_path / outputs).glob("runs/*/*/summary.json"))
    assert len(records) == 1, records  # the same command continued the stopped run
    return json.loads(records[0].read_text())


def _stopped_then_continued(tmp_path, args, signal_name, where, n):
    outputs = f"{signal_name}-{where}{n}-{len(args)}-{hash(tuple(args)) % 10**6}"
    stopped = _run(tmp_path, outputs, *args, stop=(signal_name, where, n))
    expected_code = {"INT": 130, "TERM": 143}[signal_name]
    assert stopped.returncode == expected_code, stopped.stderr[-3000:]
    lines = [line for line in (stopped.stdout + stopped.stderr).splitlines()
             if "stopped by" in line]
    assert lines == [f"lepton-exp: stopped by {'Ctrl-C' if signal_name == 'INT' else 'SIGTERM'}"
                     ": run the same command again to continue from the last checkpoint"]
    assert "Traceback" not in stopped.stderr
    record = _record(tmp_path, outputs)
    assert record["status"] == "interrupted"
    again = _run(tmp_path, outputs, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "not resumable" not in again.stderr  # a warning that contradicts exact resume
    return record, _record(tmp_path, outputs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("stops")
    done = _run(tmp_path, "reference", *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path, _record(tmp_path, "reference")["metrics"]


@pytest.mark.parametrize("signal_name,where,n", [
    ("INT", "train", 13),  # inside a step, mid-epoch 1 (10 steps an epoch)
    ("TERM", "test", 1),  # while testing the best checkpoint, after the fit
])
def test_a_stopped_command_continues_to_the_uninterrupted_metrics(reference, signal_name,
                                                                   where, n):
    tmp_path, expected = reference
    stopped, resumed = _stopped_then_continued(tmp_path, TINY, signal_name, where, n)
    assert resumed["metrics"] == expected
    if where == "train":
        assert resumed["resumed_from"].endswith("last.ckpt")


@pytest.mark.slow  # ~40 s more: the other points, and distillation with the teacher cache
@pytest.mark.parametrize("signal_name,where,n", [
    ("TERM", "train", 4), ("INT", "validate", 1), ("INT", "test", 0)])
def test_other_stop_points_continue_to_the_uninterrupted_metrics(reference, signal_name,
                                                                 where, n):
    tmp_path, expected = reference
    _, resumed = _stopped_then_continued(tmp_path, TINY, signal_name, where, n)
    assert resumed["metrics"] == expected


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["true", "false"])
def test_a_stopped_distillation_continues_exactly_with_or_without_the_output_cache(
        reference, cache):
    tmp_path, _ = reference
    args = [*TINY[:-1], "trainer.max_epochs=3", "distill=kd", "teacher.max_epochs=1",
            f"distill.cache_teacher_outputs={cache}"]
    done = _run(tmp_path, f"distill-{cache}", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = _record(tmp_path, f"distill-{cache}")["metrics"]
    _, resumed = _stopped_then_continued(tmp_path, args, "INT", "train", 23)
    assert resumed["metrics"] == expected
