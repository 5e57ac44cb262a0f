"""Config composition: every option of every group, schemas, and the one-line errors."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from lepton_exp.config import CONF_DIR
from lepton_exp.config.identity import flatten
from lepton_exp.config.preflight import PreflightError, preflight
from lepton_exp.config.validate import validate
from lepton_exp.errors import ConfigError

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(group, option.stem) for group in GROUPS
           for option in sorted((CONF_DIR / group).glob("*.yaml"))]
TRANSFORMER = ["data=synthetic_text", "model=bert_tiny"]  # options that only prune transformers
NEEDS_VALUE = {("model", "timm"): ["model.name=resnet18"], ("prune", "heads"): TRANSFORMER,
               ("prune", "ffn"): TRANSFORMER, ("data", "glue"): ["data.task=rte"],
               ("experiment", "glue_distill"): ["data.task=rte"]}


def test_every_group_has_options():
    assert {"data", "model", "distill", "prune", "optim", "scheduler", "trainer", "logger",
            "experiment", "paths"} <= set(GROUPS)
    assert len(OPTIONS) >= 30


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(compose_cfg, group, option):
    cfg = compose_cfg(f"{group}={option}", *NEEDS_VALUE.get((group, option), []))
    validate(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)  # what `--cfg job --resolve` prints
    if group == "data":
        assert resolved["data"]["name"] == option
    if group == "model" and option != "timm":
        assert resolved["model"]["name"] == option
    expected_stage = {("experiment", "quickstart"): "pipeline",
                      ("experiment", "sst2_distill"): "pipeline",
                      ("experiment", "sst2_distill_gpu"): "pipeline",
                      ("experiment", "glue_distill"): "pipeline",
                      ("experiment", "cifar_prune"): "prune"}.get(
        (group, option), "distill" if resolved["distill"]["terms"] else "teacher")
    if group == "prune" and option != "none":
        expected_stage = "prune"
    assert resolved["stage"] == expected_stage


def test_experiment_overrides_root_keys(compose_cfg):
    cfg = compose_cfg("experiment=quickstart")
    assert cfg.name == "quickstart"
    assert cfg.data.name == "digits" and cfg.trainer.max_epochs == 15


def test_model_timm_requires_a_name(compose_cfg):
    with pytest.raises(ConfigError, match=r"model\.name has no value"):
        validate(compose_cfg("model=timm"))


@pytest.mark.parametrize("override,expected", [
    ("trainer.max_epoch=3", "unknown config key 'trainer.max_epoch' (did you mean "
                            "'trainer.max_epochs'?)"),
    ("trainer.max_epochs=abc", "'trainer.max_epochs=abc'"),
    ("data=cifar", "unknown option data=cifar (did you mean 'cifar10'?)"),
    ("model=resnet21", "unknown option model=resnet21"),
    ("optim.lr=-0.1", "optim.lr=-0.1 is out of range"),
    ("optim.lr=nan", "optim.lr=nan is out of range"),
    ("optim.name=sgdd", "optim.name=sgdd is not one of sgd, adamw, adam (did you mean 'sgd'?)"),
    ("+trainer.max_epoch=3", "unknown config key 'trainer.max_epoch'"),
    ("+data.rooot=x", "unknown config key 'data.rooot'"),
    ("seed=1,2,x", "'seed=x'"),
    ("data.batch_size=16,0", "data.batch_size=0 is out of range"),
    ("scheduler.gamma=1.5", "scheduler.gamma=1.5 is out of range"),
    ("logger.mode=sometimes", "logger.mode=sometimes is not one of offline, online, disabled"),
    ("model=timm", "model.name has no value"),
    ("data.root=/x",
     "'data.root' belongs to data=cifar10, cifar100, glue, image_folder, shards, sst2, "
     "synthetic_text, text_shards, text_table, not data=digits"),
    ("model.kwargs.depth=3", "add it with a plus, +model.kwargs.depth=..."),
    ("experiment=null", "experiment=null is not an option"),
    ("seed=interval(0,1)", "needs a sampling sweeper plugin"),
    ("hydra.run.dri=x", "unknown config key 'hydra.run.dri' (did you mean 'hydra.run.dir'?)"),
    ("hydra/launcher=joblb", "unknown option hydra/launcher=joblb (did you mean 'joblib'?)"),
    ("data.split_seed=-1", "data.split_seed=-1 is out of range"),
    ("data.std=[0,1]", "data.std=0.0 is out of range"),
    ("data=synthetic data.num_classes=1", "data.num_classes=1 is out of range"),
    ("optim.betas=[0.9,1.5]", "optim.betas=1.5 is out of range"),
    ("scheduler=multistep scheduler.milestones=[]", "scheduler.milestones is empty"),
    ("data=cifar10 data.test_subset=0", "data.test_subset=0 is out of range"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0 is out of range"),
    ("trainer.max_steps=0", "trainer.max_steps=0 is out of range"),
    ("optim=adamw optim.betas=[0.9]", "optim.betas needs two values"),
    ("optim.nesterov=true optim.momentum=0", "optim.nesterov=true needs optim.momentum > 0"),
    ("data.val_size=1.5", "data.val_size=1.5 must be a fraction below 1 or a whole number"),
])
def test_bad_overrides_give_one_line_naming_the_fix(override, expected):
    with pytest.raises(PreflightError) as caught:
        preflight(["--multirun", *override.split()])  # -m: some cases are sweeps
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_sweep_without_multirun_is_explained():
    with pytest.raises(PreflightError, match=r"'seed=0,1' is a sweep: add -m"):
        preflight(["seed=0,1"])
    with pytest.raises(PreflightError, match=r"--cfg job shows the config of one job"):
        preflight(["-m", "seed=0,1", "--cfg", "job"])


def test_good_overrides_and_sweeps_pass_preflight():
    preflight(["experiment=quickstart", "trainer.max_epochs=2", "seed=0,1,2", "-m",
               "data=digits,synthetic", "hydra/launcher=joblib"])


def test_flatten_gives_dotted_keys_for_wandb():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {
        "a.b": 1, "a.c.d": [1, 2], "e": None}


@pytest.mark.parametrize("overrides,message", [
    (["distill=kd", "distill.schedule.temperature_final=1"],
     "distill.schedule.*_final is set but distill.schedule.name=constant"),
    (["distill=kd", "distill.alpha=1"], "distill.terms.kd.weight is 1 - distill.alpha = 0"),
    (["distill=kd", "distill.layers.student=[1]"], "no term that uses them"),
    (["distill=fitnet", "distill.layers.student=[1]"],
     "distill.layers is unused: fitnet set their own taps"),
    (["distill=at", "distill.layers.student=[]"], "must be auto (= uniform), last or"),
    (["distill=at", "distill.layers.student=abc"], "must be auto (= uniform), last or"),
    (["distill=fitnet", "distill.terms.fitnet.layers.student=[]"],
     "distill.terms.fitnet.layers.student=[] must be auto"),
    (["distill=at", "distill.terms.at.weight=0"], "distill.terms.at.weight=0 is out of range"),
    (["distill=kd", "teacher.lr=0"], "teacher.lr=0.0 is out of range"),
])
def test_distill_settings_that_would_silently_do_nothing_are_errors(compose_cfg, overrides,
                                                                     message):
    with pytest.raises(ConfigError) as error:
        validate(compose_cfg(*overrides))
    assert message in str(error.value)


def test_a_scheduled_alpha_below_one_keeps_kd_alive(compose_cfg):
    validate(compose_cfg("distill=kd", "distill.alpha=1", "distill.schedule.name=linear",
                         "distill.schedule.alpha_final=0.5"))


@pytest.mark.parametrize("overrides, composes", [
    (["trainer.max_epochs=abc"], 1),          # a value the key's type refuses: no more
    (["data.root=/x"], 2),                    # an unknown key: the config before it too
    (["optim.lr=0.1", "trainer.max_epohs=3"], 2),  # the prefix; the config before is it
])
def test_explaining_a_bad_override_composes_only_what_the_reason_needs(monkeypatch, overrides,
                                                                       composes):
    """Each compose costs a few tenths of a second: a config error stays under a second."""
    from lepton_exp.config import preflight as module

    calls = []
    compose = module._compose
    monkeypatch.setattr(module, "_compose",
                        lambda *args: calls.append(args) or compose(*args))
    with pytest.raises(PreflightError):
        preflight(overrides)
    assert len(calls) == composes
