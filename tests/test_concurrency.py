"""Parallel jobs of one sweep, as real processes: they share the teacher cache and the
results directory, train the missing teacher exactly once (the others wait on its file
lock) and each leave one complete run record.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_LOCAL_EXE = Path(sys.executable).parent / "lepton-exp"  # this venv's, not one on PATH
EXE = str(_LOCAL_EXE) if _LOCAL_EXE.exists() else (shutil.which("lepton-exp") or "lepton-exp")
SEEDS = (0, 1, 2, 3)


@pytest.mark.slow  # real processes, ~100 s: make test-all
def test_four_parallel_jobs_share_one_teacher_and_the_results_directory(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    out = tmp_path / "out"
    env = {**os.environ, "LEPTON_OUTPUT_DIR": str(out), "WANDB_MODE": "offline",
           "HF_HUB_OFFLINE": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run(
        [EXE, "-m", "data=synthetic", "distill=kd", f"seed={','.join(map(str, SEEDS))}",
         "data.num_samples=256", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false", "logger=none", "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=4"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Traceback" not in done.stderr + done.stdout

    # -- the teacher cache: one complete entry, nothing half-written or set aside ----------
    teachers = out / "cache" / "teachers"
    leftovers = [p.name for p in teachers.iterdir() if ".tmp-" in p.name or ".corrupt-" in p.name]
    assert not leftovers, leftovers
    entries = [p for p in teachers.iterdir() if p.is_dir() and p.name != "runs"]
    assert len(entries) == 1, [p.name for p in entries]
    entry = entries[0]
    assert sorted(p.name for p in entry.iterdir()) == ["model.safetensors", "teacher.json"]
    from safetensors import safe_open

    with safe_open(str(entry / "model.safetensors"), "pt") as weights:
        assert len(list(weights.keys())) > 0
    cached = json.loads((entry / "teacher.json").read_text())
    assert cached["key"] == entry.name

    # -- exactly one teacher training run, complete, the one the entry points at ----------
    teacher_runs = [p for p in (teachers / "runs").iterdir()]
    assert [p.name for p in teacher_runs] == [entry.name]
    teacher_run = teacher_runs[0]
    assert Path(cached["run_dir"]).resolve() == teacher_run.resolve()
    teacher_record = json.loads((Path(cached["run_dir"]) / "summary.json").read_text())
    assert teacher_record["status"] == "completed" and teacher_record["stage"] == "teacher"
    assert teacher_record["metrics"] == cached["metrics"]

    # -- the results directory: one sweep, four complete job records ----------------------
    sweeps = list((out / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == len(SEEDS), [p.name for p in jobs]
    records = []
    for job in jobs:
        assert not list(job.glob(".summary.json.*")), f"a temp record was left in {job}"
        record = json.loads((job / "summary.json").read_text())  # whole, parseable JSON
        assert record["status"] == "completed", (job, record.get("error"))
        assert record["stage"] == "distill" and Path(record["run_dir"]).resolve() == job.resolve()
        assert (job / "model.safetensors").is_file()
        records.append(record)
    assert sorted(r["seed"] for r in records) == list(SEEDS)

    # -- every student learned from that one teacher; exactly one job trained it ----------
    statuses = []
    for record in records:
        source, = record["teachers"]
        assert source["kind"] == "cache" and source["key"] == entry.name, source
        assert Path(source["path"]).resolve() == (entry / "model.safetensors").resolve()
        assert Path(source["run_dir"]).resolve() == teacher_run.resolve()
        assert source["metrics"] == cached["metrics"]
        statuses.append(source["cache"])
    assert sorted(statuses) == ["hit"] * (len(SEEDS) - 1) + ["trained"], statuses
