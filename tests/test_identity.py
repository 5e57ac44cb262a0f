"""One definition of "what changes a result": run identity and the teacher-cache key both come
from the schemas' marks, and a re-run only ever sets aside what runs write."""

from __future__ import annotations

from omegaconf import OmegaConf

from lepton_exp.config.identity import computed_settings, to_container
from lepton_exp.teachers.cache import cache_key, teacher_run_config


def _key(compose_cfg, *overrides):
    cfg = compose_cfg(*overrides)
    return cache_key(teacher_run_config(cfg, cfg.teacher))


def test_the_teacher_key_follows_what_trains_the_weights(compose_cfg):
    base = _key(compose_cfg)
    # where it runs and what is measured: the same trained teacher
    for setting in ("trainer.limit_test_batches=2", "trainer.accelerator=auto",
                    "trainer.num_sanity_val_steps=1", "logger=csv", "data.num_workers=1",
                    "resume=false", "prune=gradual", "quant=qat", "distill=kd"):
        assert _key(compose_cfg, setting) == base, setting
    assert _key(compose_cfg, "seed=1") == base  # students' seeds share the teacher (its own)
    for setting in ("trainer.max_epochs=3", "optim.lr=0.2", "data.batch_size=32",
                    "teacher.seed=1", "data.split_seed=1", "teacher.model.name=resnet8"):
        assert _key(compose_cfg, setting) != base, setting


def test_run_identity_leaves_out_only_what_does_not_change_the_result(compose_cfg):
    def identity(*overrides):
        return computed_settings(to_container(compose_cfg(*overrides)))

    base = identity()
    for setting in ("logger=csv", "resume=false", "trainer.enable_progress_bar=false",
                    "data.num_workers=1", "checkpoint_every_minutes=5"):
        assert identity(setting) == base, setting
    # a test-batch limit changes the recorded metrics (not the teacher: see above)
    assert identity("trainer.limit_test_batches=2") != base


def test_a_record_with_options_its_method_does_not_declare_is_the_same_run(compose_cfg):
    """A record written when every prune method shared one schema (prune.importance under
    prune=magnitude) still identifies the same run: a re-run continues it."""
    config = to_container(compose_cfg("prune=magnitude"))
    old = {**config, "prune": {**config["prune"], "importance": "l1", "frequency": 10},
           "quant": {**config["quant"], "calibration_batches": 8}}
    assert computed_settings(old) == computed_settings(config)
    assert computed_settings({**old, "seed": 1}) != computed_settings(config)


def test_a_teacher_run_is_the_same_whichever_method_asked_for_it(compose_cfg):
    runs = [teacher_run_config(cfg, cfg.teacher) for cfg in (
        compose_cfg("prune=gradual", "prune.end=0.7"), compose_cfg("quant=qat", "distill=kd"),
        compose_cfg("distill=kd"))]
    settings = [computed_settings(to_container(run)) for run in runs]
    assert settings[0] == settings[1] == settings[2]
    assert {run.name for run in runs} == {"teacher-resnet20-digits"}


def test_setting_a_run_aside_moves_what_runs_write_and_nothing_else(tmp_path):
    from lepton_exp.app.runner import _set_aside

    written = ["summary.json", "model.safetensors", "model_int8.pt2", "checkpoints/last.ckpt",
               "round1/round.pt", "qat/checkpoints/last.ckpt", "wandb/run", "csv/metrics.csv"]
    kept = [".hydra/config.yaml", "lepton-exp.log", "notes.txt", "data/train.npz"]
    for name in [*written, *kept]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    aside = _set_aside(tmp_path)
    assert aside.name.startswith("replaced-")
    assert all((aside / name).is_file() and not (tmp_path / name).exists() for name in written)
    assert all((tmp_path / name).is_file() for name in kept)


def test_config_checks_that_need_the_data_kind_skip_untyped_configs(compose_cfg):
    """A DDP worker rebuilds its config from plain values (no schemas) after the launching
    process validated it: checks that read the data set's kind from its schema stand down."""
    from lepton_exp.config.schemas import is_text_data
    from lepton_exp.config.validate import validate

    typed = compose_cfg("data=synthetic_text", "model=bert_tiny", "prune=heads")
    assert is_text_data(typed) is True
    assert is_text_data(compose_cfg()) is False
    untyped = OmegaConf.create(OmegaConf.to_container(typed, resolve=True))
    assert is_text_data(untyped) is None
    validate(untyped)
