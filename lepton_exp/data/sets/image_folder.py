"""Any class-per-subfolder image tree (torchvision's ImageFolder layout), decoded lazily.

``data.root`` holds ``train/`` (+ ``val/``, + ``test/``), each with one subfolder per class,
or the class subfolders directly (then val and test are stratified splits, as for digits).
Images are decoded in the DataLoader workers, never all held in memory; training uses
ImageNet's augmentation (random resized crop + flip), evaluation resize + center crop.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from lepton_exp.config.checks import check_range
from lepton_exp.config.schemas import DataConfig, choice, not_result
from lepton_exp.errors import ConfigError

MEAN = (0.485, 0.456, 0.406)  # ImageNet's statistics: what pretrained timm models expect
STD = (0.229, 0.224, 0.225)
SPLIT_DIRS = {"train": "train", "val": "val", "test": "test"}


@dataclass
class Schema(DataConfig):
    root: Optional[str] = None  # train/ (+ val/, test/) of class folders, or class folders
    image_size: int = 224  # the crop the model sees
    # evaluation: short side before the center crop (None: image_size / 0.875; random_crop:
    # image_size)
    resize_size: Optional[int] = None
    augment: bool = True
    # random_resized_crop: ImageNet's (scale crop_scale, then flip); random_crop: CIFAR's
    # (pad crop_padding, crop image_size, then flip) for images already at their size
    augmentation: str = choice("random_resized_crop", "random_crop")
    crop_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])
    crop_padding: int = 4
    test_size: float = 0.1  # without a test/ folder: the stratified share held out for testing
    val_subset: Optional[int] = None
    test_subset: Optional[int] = None
    num_workers: Any = not_result("auto")
    # Leave out files that cannot be decoded (counted in the record) instead of stopping.
    skip_bad_files: bool = False


def check(cfg):
    data = cfg.data
    yield check_range("data.image_size", data.image_size, 8)
    yield check_range("data.resize_size", data.resize_size, data.image_size)
    yield check_range("data.test_size", data.test_size, 0, low_open=True)
    yield check_range("data.crop_padding", data.crop_padding, 0)
    for key in ("val_subset", "test_subset"):
        yield check_range(f"data.{key}", data[key], 1)
    scale = list(data.crop_scale)
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        yield (f"data.crop_scale={scale} must be [low, high] with 0 < low <= high <= 1 (the "
               "share of the image a training crop covers; ImageNet: [0.08, 1.0])")


def build(cfg):
    from lepton_exp.data.image import ImageClassificationData

    classes = manifests(cfg.root)["train"].classes
    return ImageClassificationData(
        cfg, num_classes=len(classes), class_names=classes, mean=MEAN, std=STD,
        load=load, augmentation=augmentation, preprocess=preprocess)


def data_identity(cfg) -> str:
    """What the teacher cache keys this data by: every split's manifest (paths, sizes,
    mtimes), so a changed folder trains a new teacher without hashing the images."""
    return "-".join(f"{name}:{manifest.digest()}"
                    for name, manifest in sorted(manifests(cfg.root).items()))


@functools.lru_cache(maxsize=4)
def _scan(root: str, stamp: tuple) -> dict:
    from lepton_exp.data.folder import scan_folder

    base = Path(root)
    folders = {entry.name for entry in os.scandir(base)
               if entry.is_dir() and not entry.name.startswith(".")}
    if SPLIT_DIRS["train"] not in folders:  # class folders directly: one pool
        return {"train": scan_folder(base)}
    others = sorted(folders - set(SPLIT_DIRS.values()))
    if others:  # a class named "train", or a split folder under another name
        raise ConfigError(f"'{base}' has train/ beside {', '.join(others[:3])}/: use either "
                          "train/ (+ val/, test/) with class folders inside, or only class "
                          "folders (rename a class called train)")
    found = {"train": scan_folder(base / SPLIT_DIRS["train"], key="data.root/train")}
    for name in ("val", "test"):
        if (base / SPLIT_DIRS[name]).is_dir():
            found[name] = scan_folder(base / SPLIT_DIRS[name], found["train"].classes,
                                      key=f"data.root/{name}")
    return found


def manifests(root: Optional[str]) -> dict:
    """The manifest of each split folder found under ``root`` (train, and val/test if there);
    listed once per process while the folders' modification times stay the same."""
    if not root:
        raise ConfigError("data.root is not set: point it at a folder of class subfolders "
                          "(or of train/ + val/ + test/ with class subfolders)")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise ConfigError(f"data.root='{base}' is not a directory: point it at a folder of "
                          "class subfolders (or of train/ + val/ + test/)")
    return _scan(str(base.resolve()), _folder_times(base))


def _folder_times(base: Path) -> tuple:
    """Modification times of every folder of the tree: one changes when a file is added,
    removed or renamed in it, and the tree is listed again (cheap: no file is stat'ed). A
    file rewritten in place under its name is seen by the next process."""
    times = []
    for directory, subdirs, _ in os.walk(base, followlinks=True):
        subdirs.sort()
        times.append((directory, os.stat(directory).st_mtime_ns))
    return tuple(times)


def load(cfg):
    """(training pool or (train, val), test split or None) as lazily decoded splits."""
    found = manifests(cfg.root)
    splits = {name: _split(manifest, cfg.image_size) for name, manifest in found.items()}
    pool = (splits["train"], splits["val"]) if "val" in splits else splits["train"]
    return pool, splits.get("test")


def _split(manifest, image_size: int):
    import torch

    from lepton_exp.data.base import Split
    from lepton_exp.data.folder import FileImages

    return Split(FileImages(manifest.root, manifest.paths, image_size),
                 torch.from_numpy(manifest.labels))


def augmentation(cfg, info) -> list:
    from torchvision.transforms import v2

    from lepton_exp.data.folder import train_augmentation

    if cfg.augmentation == "random_crop":  # CIFAR's (lepton_exp.data.sets.cifar10)
        return [v2.RandomCrop(cfg.image_size, padding=cfg.crop_padding, pad_if_needed=True),
                v2.RandomHorizontalFlip()]
    return train_augmentation(cfg.image_size, cfg.crop_scale)


def preprocess(cfg) -> list:
    from lepton_exp.data.folder import eval_preprocess

    # random_crop trains at the images' own scale: evaluate there too (no enlarging resize)
    resize = cfg.resize_size or (cfg.image_size if cfg.augmentation == "random_crop" else None)
    return eval_preprocess(cfg.image_size, resize)
