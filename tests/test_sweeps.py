"""Sweep presets (conf/sweep), W&B sweep files (sweeps/wandb), launcher configs and the
Optuna sweeper: every job they would start composes, and the tuning study resumes."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from lepton_exp.results.sweep import expected_jobs
from tests.conftest import REPO
from tests.test_cli import FAST, cli

PRESETS = sorted(p.stem for p in (REPO / "conf" / "sweep").glob("*.yaml"))
# Presets meant on top of an experiment of another modality.
BASE = {"text_students": ["experiment=sst2_distill"], "glue": ["experiment=glue_distill"]}
GRID_PRESETS = [name for name in PRESETS if name != "tune_kd"]


def _sweeper_params(overrides: list[str]) -> dict:
    from lepton_exp.config.compose import compose_config

    cfg = compose_config(overrides, hydra_node=True, explain=False)
    return dict(cfg.hydra.sweeper.params or {})


@pytest.mark.parametrize("preset", GRID_PRESETS)
def test_every_job_of_a_sweep_preset_composes(compose_cfg, preset):
    from lepton_exp.config.validate import validate

    base = [*BASE.get(preset, []), f"sweep={preset}"]
    params = _sweeper_params(base)
    assert "seed" in params, "every preset repeats its runs over seeds"
    jobs = expected_jobs([], params)
    assert len(jobs) >= 4
    for job in jobs:
        cfg = compose_cfg(*base, *(f"{key}={value}" for key, value in job))
        validate(cfg)
        for key, value in job:  # the job really gets its values
            if key == "model":
                assert cfg.model.name == value
            elif key == "prune":
                assert cfg.prune.method == value
            elif key == "distill":
                assert bool(cfg.distill.terms) == (value != "none")
            else:  # (a number may come back as a float; data.task=cola as it is)
                selected = str(OmegaConf.select(cfg, key))
                assert selected == value or selected == str(float(value))


WANDB_SWEEPS = sorted((REPO / "sweeps" / "wandb").glob("*.yaml"))


def test_wandb_sweep_files_are_there():  # (an ignore rule once kept them out of the repo)
    assert {p.stem for p in WANDB_SWEEPS} >= {"kd_temperature", "methods", "tune_kd"}


@pytest.mark.parametrize("path", WANDB_SWEEPS, ids=lambda p: p.stem)
def test_wandb_sweep_files_run_this_cli_with_composable_values(compose_cfg, path):
    from lepton_exp.config.validate import validate

    spec = yaml.safe_load(path.read_text())
    assert spec["program"] == "lepton-exp" and spec["metric"]["name"] == "val/acc_best"
    command = spec["command"]
    assert command[:2] == ["${env}", "lepton-exp"] and command[-1] == "${args_no_hyphens}"
    fixed = [arg for arg in command[2:-1] if not arg.startswith("${")]
    axes = []
    for key, param in spec["parameters"].items():
        values = param.get("values") or [param["min"], param["max"]]
        axes.append([f"{key}={value}" for value in values])  # what ${args_no_hyphens} gives
    for point in itertools.product(*axes):
        validate(compose_cfg(*fixed, *point))


def test_slurm_launcher_asks_for_the_trainers_devices():
    from lepton_exp.config.compose import compose_config

    def launcher(*overrides: str):
        cfg = compose_config(["hydra/launcher=slurm", *overrides], hydra_node=True,
                             explain=False)
        return cfg.hydra.launcher

    gpu = launcher("trainer=ddp", "trainer.devices=4", "hydra.launcher.partition=gpu")
    assert gpu._target_.endswith("SlurmLauncher")
    assert (gpu.gpus_per_node, gpu.nodes, gpu.tasks_per_node, gpu.partition) == (4, 1, 1, "gpu")
    assert launcher().gpus_per_node == 0  # trainer=cpu jobs ask for no GPU
    multi_node = launcher("trainer=ddp", "trainer.num_nodes=2",
                          "hydra.launcher.tasks_per_node=${trainer.devices}")
    assert (multi_node.nodes, multi_node.tasks_per_node) == (2, 2)


@pytest.mark.slow  # ~28 s (keeps the default suite under 15 min); make test-all runs it
def test_optuna_study_is_stored_and_continued_by_a_rerun(tmp_path):
    optuna = pytest.importorskip("optuna")
    env = {"LEPTON_OUTPUT_DIR": str(tmp_path / "out")}
    args = ["-m", "sweep=tune_kd", "data=synthetic", "data.num_samples=300",
            "hydra.sweeper.n_trials=2", *FAST]
    for _ in range(2):  # the same command twice: one study, four trials, none overwritten
        done = cli(*args, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
    (sweep,) = (tmp_path / "out" / "multiruns").iterdir()
    study = optuna.load_study(study_name="tune_kd-resnet8-synthetic",
                              storage=f"sqlite:///{sweep / 'optuna.db'}")
    values = [trial.value for trial in study.trials]
    assert len(values) == 4 and all(0 <= value <= 1 for value in values)
    temperatures = {round(trial.params["distill.temperature"], 6) for trial in study.trials}
    assert len(temperatures) == 4 and all(1 <= t <= 10 for t in temperatures)
    records = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    assert sorted(r["metrics"]["val/acc_best"] for r in records) == pytest.approx(sorted(values))


@pytest.mark.slow  # ~23 s (keeps the default suite under 15 min); make test-all runs it
def test_submitit_launcher_runs_the_sweep_jobs(tmp_path):
    # The SLURM launcher's code path (submitit pickles each job and runs it elsewhere),
    # executed locally: the records come back complete, in one sweep directory.
    env = {"LEPTON_OUTPUT_DIR": str(tmp_path / "out")}
    done = cli("-m", "hydra/launcher=submitit_local", "data=synthetic", "seed=0,1", *FAST,
               cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    (sweep,) = (tmp_path / "out" / "multiruns").iterdir()
    records = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    assert sorted((r["seed"], r["status"]) for r in records) == [(0, "completed"),
                                                                  (1, "completed")]


def test_previous_run_decides_skip_resume_or_fresh(compose_cfg, tmp_path):
    from lepton_exp.app.runner import previous_run
    from lepton_exp.config.identity import to_container
    from lepton_exp.tracking.record import write_json_atomic

    cfg = compose_cfg("data=synthetic")
    config = to_container(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"

    def earlier(status: str, checkpoint: bool = True, **changes) -> None:
        write_json_atomic(tmp_path / "summary.json",
                          {"status": status, "config": {**config, **changes},
                           "metrics": {"test/acc": 0.5}})
        if checkpoint:
            last.parent.mkdir(exist_ok=True)
            torch.save({"state_dict": {}}, last)  # a checkpoint that reads back

    assert previous_run(cfg, tmp_path, config) == (None, None)  # nothing there yet
    earlier("completed")
    done, resume = previous_run(cfg, tmp_path, config)
    assert done["metrics"] == {"test/acc": 0.5} and resume is None
    # Settings that do not change the result (progress bar, W&B mode) are the same run.
    quiet = compose_cfg("data=synthetic", "trainer.enable_progress_bar=false", "logger=csv")
    assert previous_run(quiet, tmp_path, to_container(quiet))[0] is not None
    # killed mid-way: continue from the last checkpoint
    earlier("running")
    assert previous_run(cfg, tmp_path, config) == (None, last)
    # Another config, or resume=false: the earlier run is set aside whole, so its
    # checkpoint can never be resumed by this one.
    for other in (compose_cfg("data=synthetic", "optim.lr=0.2"),
                  compose_cfg("data=synthetic", "resume=false")):
        earlier("running")
        assert previous_run(other, tmp_path, to_container(other)) == (None, None)
        assert not last.exists() and not (tmp_path / "summary.json").exists()
    moved = sorted(tmp_path.glob("replaced-*/checkpoints/last.ckpt"))
    assert moved, "the earlier attempt is kept, not deleted"
    earlier("running", checkpoint=False)
    (tmp_path / "summary.json").write_text('{"status": "runn')  # cut short by a crash
    assert previous_run(cfg, tmp_path, config) == (None, None)


def test_sweep_directory_is_named_after_what_the_command_computes():
    from lepton_exp.cli import sweep_dir_override

    one = sweep_dir_override(["-m", "sweep=temperature", "seed=0,1", "distill=kd,dkd"])
    (override,) = one
    assert override.startswith("hydra.sweep.dir=${paths.output_dir}/multiruns/temperature-")
    # order and launcher settings do not matter; values do
    assert sweep_dir_override(["distill=kd,dkd", "-m", "seed=0,1", "sweep=temperature",
                               "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]) == one
    assert sweep_dir_override(["-m", "sweep=temperature", "seed=0,1,2",
                               "distill=kd,dkd"]) != one
    assert sweep_dir_override(["seed=0"]) == []  # not a sweep
    assert sweep_dir_override(["-m", "seed=0,1", "hydra.sweep.dir=/x"]) == []  # chosen
