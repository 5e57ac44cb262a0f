"""Teacher resolution: the hash-addressed cache (hit, miss, two processes), checkpoints and
W&B artifacts, and the errors for teachers that do not fit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lepton_exp.app.runner import run_stage
from lepton_exp.errors import ConfigError
from lepton_exp.teachers.cache import cache_key, ensure_cached, teacher_run_config
from lepton_exp.teachers.load import read_state_dict, resolve_teachers

TINY = ["data=synthetic", "data.num_samples=128", "trainer.max_epochs=1", "logger=none",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "teacher.model.name=resnet8"]


@pytest.fixture
def cfg_for(compose_cfg, tmp_path):
    def _cfg(*overrides: str):
        return compose_cfg(*TINY, f"paths.cache_dir={tmp_path / 'cache'}", *overrides)
    return _cfg


def _key(cfg) -> str:
    return cache_key(teacher_run_config(cfg, cfg.teacher))


def test_cache_key_covers_what_determines_the_teacher_and_nothing_else(cfg_for):
    base = _key(cfg_for())
    same = ["data.num_workers=2", "data.eval_batch_size=7", "logger=csv", "name=other",
            "distill=kd", "model=resnet14", "seed=3", "distill.temperature=1"]
    for override in same:
        assert _key(cfg_for(override)) == base, override
    different = ["teacher.model.name=resnet14", "teacher.seed=1", "optim.lr=0.2",
                 "data.batch_size=16", "trainer.max_epochs=2", "teacher.max_epochs=3",
                 "data.split_seed=1", "scheduler=constant", "teacher.lr=0.3",
                 "trainer.devices=2"]  # DDP: a larger effective batch
    for override in different:
        assert _key(cfg_for(override)) != base, override


def test_teacher_run_config_uses_the_teacher_settings(cfg_for):
    cfg = cfg_for("distill=kd", "teacher.max_epochs=3", "teacher.seed=5")
    run_cfg = teacher_run_config(cfg, cfg.teacher)
    assert run_cfg.stage == "teacher" and run_cfg.model.name == "resnet8"
    assert run_cfg.trainer.max_epochs == 3 and run_cfg.seed == 5
    assert not run_cfg.distill.terms
    assert cfg.stage == "distill"  # the student's config is untouched


def test_a_missing_teacher_is_trained_once_then_served_from_the_cache(cfg_for):
    run_cfg = teacher_run_config(cfg_for(), cfg_for().teacher)
    entry, status = ensure_cached(run_cfg, run_stage)
    assert status == "trained"
    weights = read_state_dict(entry / "model.safetensors", "teacher")
    again, status = ensure_cached(run_cfg, run_stage)
    assert (again, status) == (entry, "hit")
    # What the cache serves is the teacher run's best checkpoint.
    record = (entry / "teacher.json").read_text()
    assert "best-epoch" in record
    best = read_state_dict(Path(__import__("json").loads(record)["checkpoint"]), "ckpt")
    assert all(torch.equal(weights[name], best[name]) for name in weights)


def test_a_damaged_cache_entry_is_set_aside_and_trained_again(cfg_for):
    run_cfg = teacher_run_config(cfg_for(), cfg_for().teacher)
    entry, _ = ensure_cached(run_cfg, run_stage)
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # torn write
    again, status = ensure_cached(run_cfg, run_stage)
    assert (again, status) == (entry, "trained")
    read_state_dict(again / "model.safetensors", "teacher")  # whole again
    (aside,) = entry.parent.glob(f"{entry.name}.corrupt-*")
    assert (aside / "model.safetensors").stat().st_size < weights.stat().st_size


def test_two_processes_asking_for_one_teacher_train_it_once(cfg_for, tmp_path):
    from omegaconf import OmegaConf

    config = tmp_path / "run.yaml"
    OmegaConf.save(cfg_for(), config, resolve=True)
    script = textwrap.dedent(f"""
        import logging, sys
        logging.disable(logging.CRITICAL)
        from omegaconf import OmegaConf
        from lepton_exp.app.runner import run_stage
        from lepton_exp.teachers.cache import ensure_cached, teacher_run_config
        cfg = OmegaConf.load({str(config)!r})
        entry, status = ensure_cached(teacher_run_config(cfg, cfg.teacher), run_stage)
        print("STATUS", status, entry.name)
    """)
    processes = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    statuses = sorted(line.split()[1] for out, _ in outputs for line in out.splitlines()
                      if line.startswith("STATUS"))
    assert statuses == ["hit", "trained"], outputs
    assert len(list((tmp_path / "cache" / "teachers" / "runs").iterdir())) == 1


def test_teacher_from_a_checkpoint_file(cfg_for, tmp_path):
    entry, _ = ensure_cached(teacher_run_config(cfg_for(), cfg_for().teacher), run_stage)
    record = __import__("json").loads((entry / "teacher.json").read_text())
    cfg = cfg_for("distill=kd", f"teacher.checkpoint={record['checkpoint']}")
    from lepton_exp.data import build_datamodule

    info = build_datamodule(cfg.data).info
    teacher, = resolve_teachers(cfg, info, run_stage)
    assert teacher.source["kind"] == "checkpoint" and teacher.weight == 1.0
    cached = read_state_dict(entry / "model.safetensors", "cache")
    assert all(torch.equal(teacher.model.state_dict()[k], v) for k, v in cached.items())


@pytest.mark.parametrize("problem,match", [
    ("missing", "does not exist"),
    ("truncated", "cannot read teacher.checkpoint"),
    ("architecture", r"does not fit teacher.model.name=resnet20 with 4 classes"),
])
def test_bad_teacher_checkpoints_are_one_line_errors(cfg_for, tmp_path, problem, match):
    from safetensors.torch import save_file

    from lepton_exp.data import build_datamodule
    from lepton_exp.models import build_model

    cfg = cfg_for("distill=kd")
    info = build_datamodule(cfg.data).info
    path = tmp_path / "teacher.ckpt"
    if problem == "truncated":
        torch.save({"state_dict": build_model(cfg.teacher.model, info).state_dict()}, path)
        path.write_bytes(path.read_bytes()[:200])
    elif problem == "architecture":
        path = tmp_path / "teacher.safetensors"
        save_file(build_model(cfg.teacher.model, info).state_dict(), str(path))
        cfg.teacher.model.name = "resnet20"  # weights of a resnet8
    with pytest.raises(ConfigError, match=match) as error:
        resolve_teachers(cfg_with_checkpoint(cfg, path), info, run_stage)
    assert "\n" not in str(error.value)


def cfg_with_checkpoint(cfg, path):
    cfg.teacher.checkpoint = str(path)
    return cfg


def test_unreachable_wandb_artifact_is_a_clear_error(cfg_for, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    cfg = cfg_for("distill=kd", "teacher.artifact=me/proj/teacher:v0")
    from lepton_exp.data import build_datamodule

    with pytest.raises(ConfigError, match="cannot fetch W&B artifact teacher.artifact="):
        resolve_teachers(cfg, build_datamodule(cfg.data).info, run_stage)
