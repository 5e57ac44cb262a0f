"""The console script as a user runs it: from any directory, one-line errors, sweeps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXE = shutil.which("lepton-exp") or str(Path(sys.executable).parent / "lepton-exp")
FAST = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "logger=none"]


def own_environment(**changes: str) -> dict[str, str]:
    """The environment of a command started by a test: this process's, except the W&B service
    this process may have started (wandb exports WANDB_SERVICE, and a child would attach to
    it instead of starting its own, as a user's command does)."""
    return {**{key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"},
            **changes}


def cli(*args: str, cwd: Path, module: bool = False, env: dict | None = None):
    command = [sys.executable, "-m", "lepton_exp"] if module else [EXE]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=own_environment(**(env or {})))


def test_help_lists_the_groups(tmp_path):
    done = cli("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "lepton-exp" in done.stdout
    for line in ("data: cifar10, cifar100, digits, glue, image_folder, shards, sst2, synthetic, "
                 "synthetic_text, text_shards, text_table",
                 "experiment: cifar_kd, cifar_prune, crd_cifar100, glue_distill, imagenet_kd, "
                 "quickstart, sst2_distill, sst2_distill_gpu",
                 "sweep: glue, methods, sparsity, students, temperature, text_students, tune_kd",
                 "distill: ab, at, attn_kl, attn_mse, cc, crd, dist, dkd, embedding, fitnet, fsp, "
                 "ft, hidden, kd, kd_at, minilm, none, nst, ofd, pkt, reviewkd, rkd, sp, "
                 "tinybert, vid",
                 "prune: channel, ffn, gradual, heads, magnitude, none, random"):
        assert line in done.stdout


def test_cfg_job_from_another_directory_and_as_module(tmp_path):
    for module in (False, True):
        done = cli("--cfg", "job", "data=cifar10", "model=wrn_40_2", cwd=tmp_path, module=module)
        assert done.returncode == 0, done.stderr
        assert "name: wrn_40_2" in done.stdout and "name: cifar10" in done.stdout


def test_typo_in_override_is_one_clear_line_and_exit_2(tmp_path):
    done = cli("trainer.max_epoch=3", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "lepton-exp: error: unknown config key 'trainer.max_epoch' (did you mean "
        "'trainer.max_epochs'?): list the keys with `lepton-exp --cfg job`"]
    assert not list(tmp_path.iterdir()), "a rejected command must not create run directories"


def test_runtime_config_error_is_one_line_shown_once(tmp_path):
    done = cli("data=cifar10", f"data.root={tmp_path / 'nowhere'}", *FAST, cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "not found in" in line]
    assert len(errors) == 1, errors
    assert errors[0].startswith("lepton-exp: error: cifar10 not found in")
    assert "data.root" in errors[0]


def test_version(tmp_path):
    done = cli("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("lepton-exp 0.")


def test_full_error_shows_the_stack_trace(tmp_path):
    done = cli("data=cifar10", f"data.root={tmp_path / 'nowhere'}", *FAST, cwd=tmp_path,
               env={"HYDRA_FULL_ERROR": "1"})
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_run_and_multirun_write_run_records(tmp_path):
    env = {"LEPTON_OUTPUT_DIR": str(tmp_path / "out")}
    done = cli("data=synthetic", *FAST, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    records = list((tmp_path / "out" / "runs").glob("*/*/summary.json"))
    record = json.loads(records[0].read_text())
    assert len(records) == 1 and record["status"] == "completed"
    assert record["overrides"] == ["data=synthetic", *FAST]
    # Lightning's INFO lines stay off the console but are kept in the run's log file.
    assert "GPU available" not in done.stdout
    assert "GPU available" in (records[0].parent / "lepton-exp.log").read_text()
    # Lightning's tip on every run (printed by its own console handler) goes the same way
    assert "litlogger" not in done.stdout + done.stderr
    assert "litlogger" in (records[0].parent / "lepton-exp.log").read_text()


def _sweep_records(out: Path) -> tuple[Path, list[dict]]:
    sweeps = list((out / "multiruns").iterdir())
    assert len(sweeps) == 1, sweeps  # one sweep, one directory (even when jobs vary the name)
    return sweeps[0], [json.loads(p.read_text()) for p in sorted(sweeps[0].glob("*/summary.json"))]


def test_parallel_multirun_runs_each_job_once_and_skips_complete_ones_on_rerun(tmp_path):
    env = {"LEPTON_OUTPUT_DIR": str(tmp_path / "out")}
    sweep = ["-m", "data=synthetic", "seed=0,1", "model=resnet8,resnet14", *FAST]
    done = cli(*sweep, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    sweep_dir, records = _sweep_records(tmp_path / "out")
    assert sorted((r["seed"], r["config"]["model"]["name"]) for r in records) == [
        (0, "resnet14"), (0, "resnet8"), (1, "resnet14"), (1, "resnet8")]
    assert all(r["status"] == "completed" for r in records)
    # Two jobs at once on this machine's cores: each gets its share of threads.
    cores = len(os.sched_getaffinity(0))
    assert {r["torch_threads"] for r in records} == {max(1, cores // 2)}
    # The same sweep again (another launcher: how jobs run is not what they compute) finds
    # its directory and skips the complete runs instead of training them again.
    again = cli(*sweep, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert (again.stdout + again.stderr).count("skipped") == 4
    _, rerun = _sweep_records(tmp_path / "out")
    assert [r["started_at"] for r in rerun] == [r["started_at"] for r in records]
    # A different grid is a different sweep.
    other = cli("-m", "data=synthetic", "seed=2", "model=resnet8", *FAST, cwd=tmp_path, env=env)
    assert other.returncode == 0, other.stderr
    assert len(list((tmp_path / "out" / "multiruns").iterdir())) == 2


@pytest.mark.slow  # ~20 s; the default suite stops and continues real commands in test_stops.py
def test_rerun_of_a_killed_sweep_continues_from_the_last_checkpoint(tmp_path):
    env = {**os.environ, "LEPTON_OUTPUT_DIR": str(tmp_path / "out")}
    args = ["-m", "data=synthetic", "data.num_samples=1000", "seed=0", "trainer.max_epochs=3",
            "trainer.enable_progress_bar=false", "logger=none"]
    job = subprocess.Popen([EXE, *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    last = None
    while time.time() < deadline and job.poll() is None:
        found = list((tmp_path / "out" / "multiruns").glob("*/*/checkpoints/last.ckpt"))
        if found:
            last = found[0]
            break
        time.sleep(0.05)
    job.kill()  # SIGKILL: no chance to write anything more
    job.wait()
    assert last is not None, "the run ended before its first checkpoint"
    killed = json.loads((last.parent.parent / "summary.json").read_text())
    assert killed["status"] == "running"
    done = cli(*args, cwd=tmp_path, env={"LEPTON_OUTPUT_DIR": str(tmp_path / "out")})
    assert done.returncode == 0, done.stderr
    _, (record,) = _sweep_records(tmp_path / "out")
    assert record["status"] == "completed"
    assert record["resumed_from"] == str(last)
    assert record["metrics"]["epochs"] == 3
    assert "Restoring states from the checkpoint" in (
        last.parent.parent / "lepton-exp.log").read_text()


def test_multirun_flag_may_come_anywhere_on_the_command_line():
    from lepton_exp.cli import flags_first

    assert flags_first(["a=1", "-m", "b=2,3"]) == ["-m", "a=1", "b=2,3"]
    assert flags_first(["--cfg", "job", "--resolve", "x=1"]) == ["--resolve", "--cfg", "job",
                                                                 "x=1"]


def test_sweep_objective_is_the_best_value_of_the_metric_that_picks_the_best_epoch():
    from lepton_exp.cli import sweep_objective

    assert sweep_objective({"test/acc": 0.9, "val/acc_best": 0.8}) == 0.8
    assert sweep_objective({"val/mcc": 0.1, "val/mcc_best": 0.3, "test/mcc": 0.2}) == 0.3
    assert sweep_objective({"test/acc": 0.9}) is None
