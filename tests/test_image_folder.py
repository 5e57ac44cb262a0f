"""data=image_folder: lazily decoded class folders, CIFAR parity, manifests, bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lepton_exp.app.runner import run_stage
from lepton_exp.data import build_datamodule
from lepton_exp.data.folder import FileImages, scan_folder
from lepton_exp.data.sets import cifar10, image_folder
from lepton_exp.errors import ConfigError, Stopped
from tests.image_files import cifar_as_folders, random_images, write_image_folder

FAST = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "logger=none"]
CIFAR_STATS = [f"data.mean=[{','.join(map(str, cifar10.MEAN))}]",
               f"data.std=[{','.join(map(str, cifar10.STD))}]"]


def _folder_dm(root: Path, **values):
    cfg = OmegaConf.structured(image_folder.Schema(name="image_folder", root=str(root),
                                                   **values))
    return build_datamodule(cfg)


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> Path:
    """train/ + test/ of 3 classes, 40 x 48 PNGs."""
    root = tmp_path_factory.mktemp("folder")
    names = ("cat", "dog", "emu")
    write_image_folder(root / "train", *random_images(36, 3, seed=1), names)
    write_image_folder(root / "test", *random_images(12, 3, seed=2), names)
    return root


# -- CIFAR-10 as PNG folders: the same pixels, the same run ----------------------------------
@pytest.fixture(scope="module")
def cifar_folders(tmp_path_factory):
    source = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10"
    if not (source / "train.npz").exists():
        pytest.skip(f"real CIFAR-10 not found at {source}")
    return cifar_as_folders(source, tmp_path_factory.mktemp("cifar"), 30, 10,
                            cifar10.CLASS_NAMES)


def test_cifar_written_as_png_folders_reads_back_the_same_pixels(cifar_folders):
    png, npz = cifar_folders
    with np.load(npz / "train.npz") as arrays:
        expected = torch.from_numpy(arrays["x"].transpose(0, 3, 1, 2).copy())
    manifest = scan_folder(png / "train")
    assert manifest.classes == cifar10.CLASS_NAMES
    images = FileImages(manifest.root, manifest.paths, 32)
    assert torch.equal(torch.stack([images[i] for i in range(len(images))]), expected)


def test_image_folder_run_on_cifar_pngs_equals_the_cifar10_run(cifar_folders, compose_cfg,
                                                                tmp_path):
    """Same pixels, same order, same (seeded per sample) crop + flip: the same metrics."""
    png, npz = cifar_folders
    common = [*FAST, "stage=teacher", "model=resnet8", "data.val_size=50", "data.batch_size=50",
              "data.augment=true", "data.num_workers=0"]
    cifar_record = run_stage(compose_cfg(*common, "data=cifar10", f"data.root={npz}"),
                             run_dir=tmp_path / "cifar")
    folder_record = run_stage(compose_cfg(
        *common, "data=image_folder", f"data.root={png}", "data.image_size=32",
        "data.augmentation=random_crop", *CIFAR_STATS),
        run_dir=tmp_path / "folder")
    measured = {key for key in cifar_record["metrics"] if "time" not in key}
    assert {key: folder_record["metrics"][key] for key in measured} == {
        key: cifar_record["metrics"][key] for key in measured}
    assert list(folder_record["data"]["class_names"]) == list(cifar10.CLASS_NAMES)


# -- layout, options, transforms ---------------------------------------------------------------
def test_class_folders_without_train_dir_are_split_stratified(tmp_path):
    write_image_folder(tmp_path, *random_images(40, 4), ("a", "b", "c", "d"))
    dm = _folder_dm(tmp_path, val_size=8, test_size=8, image_size=16)
    dm.setup()
    assert (len(dm.train), len(dm.val), len(dm.test)) == (24, 8, 8)
    for split in (dm.val, dm.test):
        assert torch.bincount(split.labels, minlength=4).tolist() == [2, 2, 2, 2]
    assert dm.info.class_names == ("a", "b", "c", "d") and dm.info.image_size == 16


def test_transforms_give_the_configured_size_and_training_crops_vary(small_folder):
    dm = _folder_dm(small_folder, image_size=24, resize_size=30, val_size=6)
    dm.setup()
    train, evaluation = dm.dataset(dm.train, train=True), dm.dataset(dm.test, train=False)
    assert evaluation[0][0].shape == (3, 24, 24) and train[(0, 1)][0].shape == (3, 24, 24)
    # evaluation: deterministic; training: the sample's seed decides the crop
    assert torch.equal(evaluation[0][0], evaluation[0][0])
    assert torch.equal(train[(0, 7)][0], train[(0, 7)][0])
    assert not torch.equal(train[(0, 7)][0], train[(0, 8)][0])
    # the eval transform is resize 30 then center crop 24, then normalisation
    raw = dm.test.images[0].float() / 255
    resized = torch.nn.functional.interpolate(raw[None], size=(30, 36), mode="bilinear",
                                              antialias=True, align_corners=False)[0]
    crop = resized[:, 3:27, 6:30]
    mean, std = torch.tensor(image_folder.MEAN)[:, None, None], torch.tensor(
        image_folder.STD)[:, None, None]
    assert torch.allclose(evaluation[0][0], (crop - mean) / std, atol=0.03)


def test_val_folder_is_used_and_workers_auto_resolve(small_folder, tmp_path):
    import shutil

    from lepton_exp.data.base import loader_workers

    shutil.copytree(small_folder, tmp_path / "tree")
    write_image_folder(tmp_path / "tree" / "val", *random_images(6, 3, seed=3),
                       ("cat", "dog", "emu"))
    dm = _folder_dm(tmp_path / "tree", image_size=16)
    dm.setup()
    assert (len(dm.train), len(dm.val), len(dm.test)) == (36, 6, 12)
    assert loader_workers("auto") == min(8, len(os.sched_getaffinity(0)))
    assert loader_workers(3) == 3


def test_manifest_digest_follows_paths_sizes_and_mtimes_not_reads(tmp_path):
    write_image_folder(tmp_path, *random_images(6, 2), ("a", "b"))
    first = scan_folder(tmp_path).digest()
    assert scan_folder(tmp_path).digest() == first
    file = next((tmp_path / "a").iterdir())
    os.utime(file, ns=(1, 1))
    touched = scan_folder(tmp_path).digest()
    assert touched != first
    (tmp_path / "b" / "new.png").write_bytes(file.read_bytes())
    assert scan_folder(tmp_path).digest() not in (first, touched)


def test_teacher_cache_key_changes_when_the_folder_changes(small_folder, compose_cfg, tmp_path):
    import shutil

    from lepton_exp.teachers.cache import cache_key, teacher_run_config

    shutil.copytree(small_folder, tmp_path / "tree")
    cfg = compose_cfg("stage=distill", "distill=kd", "data=image_folder",
                      f"data.root={tmp_path / 'tree'}", "data.image_size=16")

    def key():
        return cache_key(teacher_run_config(cfg, cfg.teacher))

    before = key()
    assert key() == before
    cat = tmp_path / "tree" / "train" / "cat"
    image = next(cat.iterdir()).read_bytes()
    (cat / "added.png").write_bytes(image)
    added = key()
    assert added != before
    (cat / "deeper").mkdir()
    (cat / "deeper" / "nested.png").write_bytes(image)  # a folder below a class folder
    assert key() not in (before, added)


# -- bad input --------------------------------------------------------------------------------
def _error(root: Path, **values) -> str:
    with pytest.raises(ConfigError) as caught:
        dm = _folder_dm(root, **values)
        dm.setup()
        for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
            list(loader)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_bad_folders_are_one_line_errors(tmp_path, small_folder):
    write_image_folder(tmp_path / "mixed", *random_images(4, 2), ("train", "zebra"))
    assert "has train/ beside zebra/" in _error(tmp_path / "mixed")
    assert "is not a directory" in _error(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert "no class subfolders" in _error(tmp_path / "empty")
    write_image_folder(tmp_path / "hollow", *random_images(4, 2), ("a", "b"))
    (tmp_path / "hollow" / "c").mkdir()
    message = _error(tmp_path / "hollow")
    assert "'" + str(tmp_path / "hollow" / "c") + "' has no images" in message
    write_image_folder(tmp_path / "odd" / "train", *random_images(4, 2), ("a", "b"))
    write_image_folder(tmp_path / "odd" / "test", *random_images(3, 3), ("a", "b", "z"))
    assert "'" + str(tmp_path / "odd" / "test" / "z") + "' is a class the training" in _error(
        tmp_path / "odd")


@pytest.mark.parametrize("workers", [0, 2])
def test_an_undecodable_image_names_the_file_in_one_line(tmp_path, workers):
    write_image_folder(tmp_path, *random_images(8, 2), ("a", "b"))
    bad = tmp_path / "a" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    message = _error(tmp_path, num_workers=workers, image_size=16, val_size=2, test_size=2,
                     batch_size=8, train_subset=None)
    assert f"cannot decode image '{bad}'" in message and "data.skip_bad_files=true" in message


def test_skip_bad_files_leaves_them_out_and_the_record_counts_them(tmp_path, compose_cfg):
    write_image_folder(tmp_path / "tree", *random_images(24, 2), ("a", "b"))
    (tmp_path / "tree" / "a" / "0000_broken.png").write_bytes(b"not an image")
    record = run_stage(compose_cfg(
        *FAST, "stage=teacher", "model=resnet8", "data=image_folder",
        f"data.root={tmp_path / 'tree'}", "data.image_size=16", "data.val_size=4",
        "data.test_size=5", "data.batch_size=4", "data.skip_bad_files=true",
        "data.num_workers=2"), run_dir=tmp_path / "run")
    assert record["status"] == "completed"
    assert record["data"]["skipped_files"] == 1
    assert record["data"]["skipped_examples"] == [str(tmp_path / "tree" / "a" / "0000_broken.png")]


def test_cli_error_for_a_bad_image_is_one_line(tmp_path):
    write_image_folder(tmp_path / "tree", *random_images(12, 2), ("a", "b"))
    (tmp_path / "tree" / "b" / "zz.jpg").write_bytes(b"\xff\xd8\xff truncated")
    result = subprocess.run(
        [sys.executable, "-m", "lepton_exp.cli", "stage=teacher", "model=resnet8",
         "data=image_folder", f"data.root={tmp_path / 'tree'}", "data.image_size=16",
         "data.val_size=2", "data.test_size=2", "data.batch_size=4", "data.num_workers=1",
         "trainer.max_epochs=1", "logger=none", f"paths.output_dir={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("lepton-exp: error")]
    assert len(errors) == 1 and f"'{tmp_path / 'tree' / 'b' / 'zz.jpg'}'" in errors[0]
    assert "Traceback" not in result.stderr
    record = json.loads(next((tmp_path / "out").rglob("summary.json")).read_text())
    assert record["status"] == "failed" and "zz.jpg" in record["error"]


def test_distillation_on_a_folder_caches_teacher_outputs_without_augmentation(
        small_folder, compose_cfg, tmp_path):
    record = run_stage(compose_cfg(
        *FAST, "trainer.max_epochs=2", "distill=kd", "model=resnet8",
        "teacher.model.name=resnet8", "teacher.max_epochs=1", "data=image_folder",
        f"data.root={small_folder}", "data.image_size=16", "data.val_size=6",
        "data.batch_size=10", "data.augment=false", "data.num_workers=0"),
        run_dir=tmp_path / "student")
    cache = record["teacher_output_cache"]
    assert cache["enabled"] is True
    # every training sample went through the teacher once, in the first epoch only
    assert cache["teacher_forwards"] == cache["samples_stored"] == record["data"]["train"] == 30


def test_a_folder_run_stopped_mid_epoch_resumes_to_identical_metrics(
        small_folder, compose_cfg, tmp_path, monkeypatch):
    from tests.test_resume import _stop_at

    cfg = compose_cfg(*FAST, "trainer.max_epochs=2", "stage=teacher", "model=resnet8",
                      "model.drop_rate=0.3", "data=image_folder", f"data.root={small_folder}",
                      "data.image_size=16", "data.val_size=6", "data.batch_size=6",
                      "data.num_workers=2")  # 5 steps an epoch; crops drawn in workers
    reference = run_stage(cfg.copy(), run_dir=tmp_path / "reference")
    _stop_at(monkeypatch, 7)
    with pytest.raises(Stopped):  # Ctrl-C: Lightning stops, the trainer raises Stopped
        run_stage(cfg.copy(), run_dir=tmp_path / "resumed")
    resumed = run_stage(cfg.copy(), run_dir=tmp_path / "resumed")
    assert resumed["resumed_from"].endswith("last.ckpt")
    assert resumed["metrics"] == reference["metrics"]
