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


def test_each_paired_process_times_every_side_twice_in_turns():
    assert sorted(overhead.PAIRED_ORDER) == ["bare", "bare", "lepton", "lepton", "plain",
                                             "plain"]
    assert overhead.PAIRED_ORDER == tuple(reversed(overhead.PAIRED_ORDER))  # ABBA
