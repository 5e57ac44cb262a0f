"""What a researcher meets every day (issue 21, points 5 and 7): hints that name the right
fix, no run directory after a config error, a run log that holds the run, readable exports."""

from __future__ import annotations

import json
import logging
import os
import io
import stat
import subprocess
import sys
import warnings

import pytest
import torch
from omegaconf import OmegaConf

from lepton_exp.config.preflight import PreflightError, preflight
from lepton_exp.data.base import DataInfo
from lepton_exp.errors import ConfigError
from lepton_exp.models import build_model, read_metadata, save_weights
from tests.test_cli import EXE, FAST, own_environment

DIGITS = DataInfo(num_classes=10, in_chans=1, image_size=8)


def preflight_error(*overrides: str) -> str:
    with pytest.raises(PreflightError) as error:
        preflight(list(overrides))
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def model(name: str):
    return build_model(OmegaConf.create({"name": name, "pretrained": False, "drop_rate": 0.0,
                                         "kwargs": {}}), DIGITS)


# -- hints -------------------------------------------------------------------------------------

def test_a_typo_of_an_existing_key_is_named_before_adding_a_new_one():
    message = preflight_error("data=digits", "distill=kd", "distill.terms.kd.hrad=true")
    assert message.startswith("unknown option distill.terms.kd.hrad (did you mean 'hard'?)")
    assert "plus" not in message  # a kd term takes no other option: adding it cannot work
    # A free-form node: the close key first, adding it with a plus after.
    message = preflight_error("data=digits", "+model.kwargs.depth=3", "model.kwargs.dept=4")
    assert message.index("did you mean 'model.kwargs.depth'") < message.index(
        "+model.kwargs.dept=")  # (with no close key, only the plus: tests/test_config.py)


@pytest.fixture
def resnet8_files(tmp_path):
    """A resnet8's weights as an export (names its architecture), as a bare safetensors
    file (does not), and as a run's checkpoint beside its run record."""
    weights = model("resnet8")
    export = tmp_path / "export" / "model.safetensors"
    export.parent.mkdir()
    save_weights(weights, export)
    bare = tmp_path / "bare.safetensors"
    from safetensors.torch import save_file

    save_file(weights.state_dict(), str(bare))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"model.{k}": v for k, v in weights.state_dict().items()}},
               checkpoint)
    (tmp_path / "run" / "summary.json").write_text(json.dumps(
        {"status": "completed", "config": {"model": {"name": "resnet8"}}}))
    return export, bare, checkpoint


def test_a_checkpoint_of_another_architecture_names_the_one_it_holds(resnet8_files):
    export, bare, checkpoint = resnet8_files
    assert read_metadata(export)["architecture"] == "resnet8"
    for path, source in ((export, "its metadata"), (checkpoint, "its run's summary.json")):
        message = preflight_error("data=digits", "distill=kd", f"teacher.checkpoint={path}",
                                  "teacher.model.name=resnet20")
        assert message == (f"teacher.checkpoint={path} holds a resnet8 ({source} says so), "
                           "not a resnet20: set teacher.model.name=resnet8")
    # A file that does not say: found by its tensors when loading (the run has started).
    from lepton_exp.teachers.load import load_weights

    with pytest.raises(ConfigError) as error:
        load_weights(model("resnet20"), bare, "teacher.checkpoint", "teacher.model.name=resnet20",
                     DIGITS)
    assert str(error.value).endswith(
        "it holds a resnet8 (its tensors match one): set teacher.model.name=resnet8")


def test_a_file_that_is_no_checkpoint_is_one_line_saying_what_to_give(tmp_path):
    garbage = tmp_path / "x.pt"
    garbage.write_bytes(os.urandom(1000))
    message = preflight_error("data=digits", "distill=kd", f"teacher.checkpoint={garbage}")
    assert message == (
        f"teacher.checkpoint={garbage} is not a checkpoint (neither torch.save's format, which "
        ".pt, .pth and Lightning's .ckpt files have, nor safetensors): give a lepton-exp run's "
        "model.safetensors or checkpoints/last.ckpt, or a state dict saved with torch.save")
    assert preflight_error("data=digits", "distill=kd", f"teacher.checkpoint={tmp_path}/no.pt"
                           ) == (
        f"teacher.checkpoint={tmp_path}/no.pt does not exist: give a lepton-exp run's "
        "model.safetensors or checkpoints/last.ckpt, or a state dict saved with torch.save (or "
        "leave teacher.checkpoint unset to train and cache it)")
    truncated = tmp_path / "cut.pt"
    torch.save(model("resnet8").state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    assert "is a damaged or incomplete torch.save file" in preflight_error(
        "data=digits", "prune=magnitude", f"prune.dense.checkpoint={truncated}")
    # Looks right, does not load: what it holds, with the fix, when the run reads it.
    from lepton_exp.teachers.load import read_state_dict

    pickled = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)
    with pytest.raises(ConfigError, match=r"holds Python objects besides tensors .*: give "
                                          "a lepton-exp run's model.safetensors") as error:
        read_state_dict(pickled, "teacher.checkpoint")
    assert "Weights only load failed" not in str(error.value)


# -- no run directory after a config error -----------------------------------------------------

def test_a_config_error_inside_the_job_leaves_no_run_directory(tmp_path, monkeypatch):
    from hydra.core.hydra_config import HydraConfig

    from lepton_exp.tracking.rundir import discard_unstarted_job

    run_dir = tmp_path / "runs" / "12-00-00_x"

    hydra = OmegaConf.create({"runtime": {"output_dir": str(run_dir)},
                              "output_subdir": ".hydra", "job": {"name": "lepton-exp"}})
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: hydra))  # in Hydra's job
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "lepton-exp.log").write_text("[..][lepton_exp.app.runner][INFO] - run x\n")
    assert discard_unstarted_job() and not run_dir.exists()
    # a directory holding anything of a run (this attempt's record, an earlier run's
    # checkpoints) is kept
    for kept in ("summary.json", "checkpoints"):
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        (run_dir / kept).mkdir()
        assert not discard_unstarted_job() and (run_dir / kept).exists()


def test_a_config_error_found_by_the_job_itself_leaves_no_run_directory(tmp_path, monkeypatch,
                                                                        capsys):
    """Past a preflight (here: not run), Hydra has made the run directory before the job's
    own check fails; the error removes it again."""
    from hydra.core.global_hydra import GlobalHydra

    from lepton_exp.cli import _app
    from lepton_exp.config.store import register_configs

    out = tmp_path / "out"
    monkeypatch.setenv("LEPTON_OUTPUT_DIR", str(out))
    monkeypatch.setattr(sys, "argv", ["lepton-exp", "data=digits", "distill.temperature=-1",
                                      "logger=none"])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level  # Hydra's job logging replaces them
    register_configs()
    try:
        with pytest.raises(SystemExit) as stopped:
            _app()
    finally:
        for handler in set(root.handlers) - set(handlers):
            handler.close()
        root.handlers[:], root.level = handlers, level
        GlobalHydra.instance().clear()
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "lepton-exp: error: distill.temperature=-1.0 is out of range: it must be in (0, inf)")
    assert list(out.glob("runs/*/*")) == [], "a config error must leave no run directory"


# -- the run's log, quiet console --------------------------------------------------------------

def test_lightning_lines_and_warnings_reach_the_log_file_not_the_console(tmp_path,
                                                                        monkeypatch):
    """As in a distillation run: Lightning was imported (by the preflight) before Hydra set
    up logging, so it printed through a console handler of its own and passed nothing on
    to the run's log file."""
    from lepton_exp.app.logs import FILE_ONLY, LOG_FILE_ENV, route_logs

    root, lightning = logging.getLogger(), logging.getLogger("pytorch_lightning")
    saved = (list(root.handlers), root.level, list(lightning.handlers), lightning.propagate)
    monkeypatch.setenv(LOG_FILE_ENV, "")  # (route_logs sets it; restored after the test)
    printed = []  # by the warnings printer in place
    monkeypatch.setattr(warnings, "showwarning", lambda *args, **kwargs: printed.append(args))
    consoles = {name: io.StringIO() for name in ("hydra", "lightning")}
    to_file = logging.FileHandler(tmp_path / "lepton-exp.log")
    to_file.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
    try:
        root.handlers[:] = [logging.StreamHandler(consoles["hydra"]), to_file]
        root.setLevel(logging.INFO)
        lightning.handlers[:] = [logging.StreamHandler(consoles["lightning"])]
        lightning.propagate = False
        route_logs()
        route_logs()  # every run of a process (a sweep, a teacher run first) calls it
        logging.getLogger("pytorch_lightning.utilities.rank_zero").info("GPU available: False")
        logging.getLogger("pytorch_lightning.utilities.rank_zero").warning("a Lightning warning")
        logging.getLogger("lepton_exp.app.runner").info("run x (stage=distill)", extra=FILE_ONLY)
        logging.getLogger("lepton_exp.teachers.cache").info("teacher t is not cached")
        warnings.showwarning("a Python warning", UserWarning, "x.py", 1)  # by warnings.warn
    finally:
        to_file.close()
        root.handlers[:], root.level = saved[:2]
        lightning.handlers[:], lightning.propagate = saved[2:]
    log = (tmp_path / "lepton-exp.log").read_text()
    assert log.splitlines() == [
        "[pytorch_lightning.utilities.rank_zero][INFO] - GPU available: False",
        "[pytorch_lightning.utilities.rank_zero][WARNING] - a Lightning warning",
        "[lepton_exp.app.runner][INFO] - run x (stage=distill)",
        "[lepton_exp.teachers.cache][INFO] - teacher t is not cached",
        "[py.warnings][WARNING] - x.py:1: UserWarning: a Python warning"]
    assert consoles["hydra"].getvalue().splitlines() == [
        "a Lightning warning", "teacher t is not cached"]  # as before: warnings, our lines
    assert consoles["lightning"].getvalue() == ""  # (not printed twice)
    assert [args[:2] for args in printed] == [("a Python warning", UserWarning)]  # once


@pytest.mark.slow  # a real distillation run (~15 s on 2 idle cores)
def test_the_run_log_holds_the_run_and_the_console_stays_quiet(tmp_path):
    teacher = tmp_path / "teacher.safetensors"
    save_weights(model("resnet8"), teacher)
    out = tmp_path / "out"
    done = subprocess.run(
        [EXE, "data=digits", "distill=kd", "data.train_subset=64", *FAST,
         f"teacher.checkpoint={teacher}", "teacher.model.name=resnet8"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=own_environment(LEPTON_OUTPUT_DIR=str(out)))
    assert done.returncode == 0, done.stderr[-3000:]
    log_file, = out.glob("runs/*/*/lepton-exp.log")
    log = log_file.read_text()
    assert "[lepton_exp.app.runner][INFO] - run distill-kd-resnet8-digits (stage=distill)" in log
    assert "[pytorch_lightning.utilities.rank_zero][INFO] - GPU available" in log
    assert "litlogger" in log
    console = done.stdout + done.stderr
    for banner in ("GPU available", "TPU available", "Tip", "litlogger", "[INFO]"):
        assert banner not in console, banner
    # the export and the record: readable by others, as any file this umask makes
    for name in ("model.safetensors", "summary.json"):
        assert stat.S_IMODE((log_file.parent / name).stat().st_mode) == 0o666 & ~umask(), name


def umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_atomic_writes_are_readable_per_the_umask(tmp_path):
    from lepton_exp.tracking.record import write_json_atomic

    previous = os.umask(0o022)
    try:
        save_weights(model("resnet8"), tmp_path / "model.safetensors")
        write_json_atomic(tmp_path / "summary.json", {"status": "completed"})
        os.umask(0o077)
        save_weights(model("resnet8"), tmp_path / "private.safetensors")
    finally:
        os.umask(previous)
    for name in ("model.safetensors", "summary.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private.safetensors").stat().st_mode) == 0o600


def test_the_dense_model_of_a_prune_run_is_not_called_a_teacher(compose_cfg, tmp_path,
                                                                 caplog):
    from lepton_exp.teachers.cache import teacher_run_config
    from lepton_exp.teachers.load import load_trained

    cfg = compose_cfg("data=digits", "prune=magnitude", f"paths.cache_dir={tmp_path}")

    def train(run_cfg, run_dir):
        raise RuntimeError("stop here")

    assert teacher_run_config(cfg, cfg.prune.dense, cfg.model).stage == "teacher"
    with caplog.at_level(logging.INFO, logger="lepton_exp.teachers.cache"):
        with pytest.raises(RuntimeError, match="stop here"):
            load_trained(cfg, "prune.dense", cfg.prune.dense, cfg.model, "model", DIGITS, train)
    line, = [r.getMessage() for r in caplog.records if "not cached" in r.getMessage()]
    assert line.startswith("dense model ")
