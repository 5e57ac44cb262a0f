"""experiment=imagenet_kd: the published ImageNet KD recipe, and a pretrained teacher used as
it is (teacher.max_epochs=0), wired end to end on a tiny image folder."""

from __future__ import annotations

import pytest
import torch

from lepton_exp.app.runner import run_stage
from lepton_exp.config.validate import validate
from lepton_exp.errors import ConfigError
from lepton_exp.training.optim import milestone_epochs
from tests.image_files import random_images, write_image_folder


@pytest.mark.parametrize("data", ["image_folder", "shards"])
def test_the_preset_is_the_published_recipe(compose_cfg, data):
    cfg = compose_cfg("experiment=imagenet_kd", f"data={data}")
    validate(cfg)
    assert (cfg.stage, cfg.model.name, cfg.data.name) == ("distill", "resnet18", data)
    assert (cfg.teacher.model.name, cfg.teacher.model.pretrained, cfg.teacher.max_epochs) == (
        "resnet34.tv_in1k", True, 0)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (
        "sgd", 0.1, 0.9, 1e-4)
    assert cfg.data.batch_size == 256 and cfg.trainer.max_epochs == 100
    assert milestone_epochs(cfg.scheduler.milestones, 100) == [30, 60, 90]
    assert cfg.scheduler.gamma == 0.1
    assert (cfg.distill.temperature, cfg.distill.alpha, list(cfg.distill.terms)) == (
        1.0, 0.5, ["kd"])  # CE 0.5 + KD 0.5 at T = 1
    assert (cfg.data.image_size, cfg.data.augmentation, cfg.data.augment) == (
        224, "random_resized_crop", True)


@pytest.mark.parametrize("overrides, message", [
    (["distill=kd", "teacher.max_epochs=0"],
     ("teacher.max_epochs=0 uses the teacher's pretrained weights as they are: set "
      "teacher.model.pretrained=true")),
    (["stage=teacher", "trainer.max_epochs=0"],
     "trainer.max_epochs=0 evaluates a pretrained model as it is"),
    (["distill=kd", "trainer.max_epochs=0"],
     r"trainer.max_epochs=0 is out of range: it must be in \[1, inf\)"),
])
def test_max_epochs_0_is_for_pretrained_teachers(compose_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg(*overrides))
    validate(compose_cfg("distill=kd", "teacher.max_epochs=0", "teacher.model.name=resnet18",
                         "teacher.model.pretrained=true"))
    validate(compose_cfg("stage=teacher", "trainer.max_epochs=0", "model=resnet18",
                         "model.pretrained=true"))


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory):
    """train/ (4 classes x 4) + val/ (4 x 1) of 64 x 64 PNGs named like ImageNet's."""
    root = tmp_path_factory.mktemp("imagenet")
    names = ("n01440764", "n01443537", "n01484850", "n01491361")
    write_image_folder(root / "train", *random_images(16, 4, (64, 64), seed=1), names)
    write_image_folder(root / "val", *random_images(4, 4, (64, 64), seed=2), names)
    return root


def test_the_preset_runs_with_its_pretrained_teacher_as_it_is(tiny_imagenet, compose_cfg,
                                                              tmp_path):
    """The preset shrunk to 16 x 16 images, one epoch, on CPU; the teacher's "pretrained"
    weights come from a local file (timm's pretrained_cfg_overlay), as they would from the Hub
    online: the teacher is evaluated and cached with exactly those weights, then distilled."""
    import timm

    from lepton_exp.teachers.cache import WEIGHTS_NAME

    torch.manual_seed(5)
    weights = timm.create_model("resnet34", num_classes=4).state_dict()
    torch.save(weights, tmp_path / "resnet34.pth")
    cfg = compose_cfg(
        "experiment=imagenet_kd", f"data.root={tiny_imagenet}", "data.image_size=16",
        "data.test_size=4", "data.batch_size=4", "data.num_workers=0", "trainer=cpu",
        "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "logger=none", f"paths.cache_dir={tmp_path}",
        f"+teacher.model.kwargs.pretrained_cfg_overlay.file={tmp_path / 'resnet34.pth'}",
        "+teacher.model.kwargs.pretrained_cfg_overlay.num_classes=4")
    record = run_stage(cfg, run_dir=tmp_path / "run")
    assert record["status"] == "completed", record.get("error")
    assert record["data"]["train"] == 12 and record["data"]["val"] == 4  # 4 held out: test
    teacher, = record["teachers"]
    assert teacher["kind"] == "cache" and teacher["metrics"]["epochs"] == 0
    assert {"val/acc", "test/acc"} <= set(teacher["metrics"])
    from safetensors.torch import load_file

    cached = load_file(teacher["path"])
    assert teacher["path"].endswith(WEIGHTS_NAME) and cached.keys() == weights.keys()
    assert all(torch.equal(cached[name], weights[name]) for name in weights)  # not trained
    assert record["metrics"]["epochs"] == 1 and "test/acc" in record["metrics"]


def test_a_pretrained_teacher_whose_classifier_does_not_fit_is_not_used_as_it_is(
        tiny_imagenet, compose_cfg, tmp_path):
    """timm would replace a 1000-class head by a random 4-class one: refused, in one line."""
    from lepton_exp.app.runner import run_stage
    from lepton_exp.errors import ConfigError

    cfg = compose_cfg(
        "stage=teacher", "model=resnet18", "model.pretrained=true", "trainer.max_epochs=0",
        "data=image_folder", f"data.root={tiny_imagenet}", "data.image_size=16",
        "data.val_size=4", "data.test_size=4", "data.num_workers=0", "logger=none")
    with pytest.raises(ConfigError, match=r"the teacher \(resnet18\) is used as it is "
                       r"\(max_epochs=0\), but its pretrained weights have a classifier of "
                       r"1000 classes and the data has 4"):
        run_stage(cfg, run_dir=tmp_path / "run")
