"""Sweep runs you can tell apart (names carry what the sweep varies) and identical jobs of
one sweep run once (the others' records point to it: the CLI sweep of
tests/test_distill_stage.py::test_cli_temperature_sweep_gives_tracked_runs_that_share_one_teacher)."""

from __future__ import annotations

from omegaconf import OmegaConf

from lepton_exp.config import CONF_DIR
from lepton_exp.config.identity import same_computation
from lepton_exp.config.naming import run_name, swept_keys, swept_label


def test_swept_keys_come_from_the_command_line_and_the_sweep_preset():
    assert swept_keys(["distill=none,kd", "distill.temperature=2,4", "trainer.max_epochs=1",
                       "hydra.launcher.n_jobs=2"], CONF_DIR) == ["distill",
                                                                 "distill.temperature"]
    # conf/sweep/temperature.yaml varies distill.temperature and seed; distill=kd,dkd too
    assert swept_keys(["sweep=temperature", "distill=kd,dkd"], CONF_DIR) == [
        "distill", "distill.temperature", "seed"]
    assert swept_keys(["optim.lr=range(0.1,0.3,0.1)", "seed=1"], CONF_DIR) == ["optim.lr"]


def test_names_carry_the_swept_values_in_short_form(compose_cfg):
    cfg = compose_cfg("distill=kd", "distill.temperature=2", "optim.lr=0.05", "seed=3",
                      "name_keys=[distill,distill.temperature,optim.lr,seed]")
    assert cfg.name == "distill-kd-T2-lr0.05-seed3-resnet8-digits"
    assert swept_label(["optim"], OmegaConf.create({"optim": {"name": "adamw"}})) == "adamw"
    # the student alone beside distillation methods: named as such, without the unread T
    alone = compose_cfg("distill=none", "distill.temperature=4",
                        "name_keys=[distill,distill.temperature]")
    assert alone.stage == "teacher" and alone.name == "distill-none-resnet8-digits"
    assert run_name("teacher", "resnet8", "digits", {}) == "teacher-resnet8-digits"


def test_settings_nothing_reads_do_not_make_another_computation(compose_cfg):
    def settings(*overrides):
        cfg = compose_cfg(*overrides)
        return same_computation(OmegaConf.to_container(cfg, resolve=True))

    assert settings("distill=none", "distill.temperature=2", "name_keys=[distill.temperature]"
                    ) == settings("distill=none", "distill.temperature=4")
    assert settings("distill=kd", "distill.temperature=2") != settings(
        "distill=kd", "distill.temperature=4")
