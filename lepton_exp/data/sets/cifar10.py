"""CIFAR-10 from a local directory (npz or torchvision layout) or torchvision's download;
CIFAR-100 (``cifar100``) is this loader with its own class count and statistics.

Every problem with the files (missing, truncated, not an npz, wrong arrays, shapes, dtypes
or labels) is a one-line :class:`ConfigError` that names the file and says what to change.
"""

from __future__ import annotations

import functools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lepton_exp.config.checks import check_range
from lepton_exp.config.schemas import DataConfig
from lepton_exp.errors import ConfigError, one_line

# The normalisation CIFAR models are trained with (lepton_exp.models.families.cifar_resnet too).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")
_TORCHVISION_DIRS = {10: "cifar-10-batches-py", 100: "cifar-100-python"}
# What to do about a bad npz file, at the end of every message about one.
_NPZ_FIX = "re-download it, or point data.root at a directory with train.npz + test.npz"
_NPZ_LAYOUT = "'x' (N x 32 x 32 x 3 uint8 images, HWC RGB) and 'y' (N integer labels)"


@dataclass
class Schema(DataConfig):
    root: Optional[str] = None  # npz dir (train.npz/test.npz) or torchvision's layout
    download: bool = False  # let torchvision download into `root` when it is empty
    val_subset: Optional[int] = None  # stratified subsets of the val/test splits (CPU-sized runs)
    test_subset: Optional[int] = None
    crop_padding: int = 4


def check(cfg):
    data = cfg.data
    for key in ("val_subset", "test_subset"):
        yield check_range(f"data.{key}", data[key], 1)
    yield check_range("data.crop_padding", data.crop_padding, 0)


def build(cfg, num_classes: int = 10, mean=MEAN, std=STD, class_names=CLASS_NAMES):
    from lepton_exp.data.image import ImageClassificationData

    return ImageClassificationData(cfg, num_classes=num_classes, mean=mean, std=std,
                                   load=functools.partial(load, num_classes=num_classes),
                                   augmentation=augmentation, class_names=class_names)


def augmentation(cfg, info) -> list:
    from torchvision.transforms import v2

    return [v2.RandomCrop(info.image_size, padding=cfg.crop_padding),
            v2.RandomHorizontalFlip()]


def load(cfg, num_classes: int):
    """(training pool, test split) from data.root: npz files, else torchvision's layout."""
    if cfg.root is None:
        raise ConfigError(f"data.root is not set: point it at a {cfg.name} directory")
    root = Path(cfg.root).expanduser()
    if root.exists() and not root.is_dir():
        raise ConfigError(
            f"data.root='{root}' is a file, not a directory: point data.root at the "
            f"directory holding train.npz + test.npz (or torchvision's "
            f"{_TORCHVISION_DIRS[num_classes]}/)")
    if (root / "train.npz").exists() or (root / "test.npz").exists():
        return _load_npz(root / "train.npz", num_classes), _load_npz(
            root / "test.npz", num_classes)
    if (root / _TORCHVISION_DIRS[num_classes]).is_dir() or cfg.download:
        return _load_torchvision(cfg, root, num_classes, train=True), _load_torchvision(
            cfg, root, num_classes, train=False)
    raise ConfigError(
        f"{cfg.name} not found in '{root}': set data.root to a directory with "
        f"train.npz + test.npz or torchvision's {_TORCHVISION_DIRS[num_classes]}/, "
        "or add data.download=true"
    )


def _load_torchvision(cfg, root: Path, num_classes: int, train: bool):
    import numpy as np
    from torchvision import datasets

    cls = datasets.CIFAR10 if num_classes == 10 else datasets.CIFAR100
    try:
        data = cls(str(root), train=train, download=cfg.download)
    except Exception as error:  # noqa: BLE001 - network or archive errors, one line
        raise ConfigError(
            f"could not load {cfg.name} from '{root}' (download={cfg.download}): "
            f"{one_line(error)[:200]}: check the network (download=true), or remove a "
            f"damaged {_TORCHVISION_DIRS[num_classes]}/ and download it again, or "
            "point data.root at a directory with train.npz + test.npz") from error
    return _to_split(np.asarray(data.data), np.asarray(data.targets),
                     root / _TORCHVISION_DIRS[num_classes], num_classes,
                     fix="remove it to download it again, or point data.root at "
                         "another copy")


def _load_npz(path: Path, num_classes: int):
    import numpy as np

    if not path.exists():
        raise ConfigError(f"'{path}' is missing: the npz layout needs train.npz and test.npz "
                          f"side by side; add it, or point data.root at a directory with both")
    if path.is_dir():
        raise ConfigError(f"'{path}' is a directory, not an npz file: {_NPZ_FIX}")
    try:
        size = path.stat().st_size
        is_zip = zipfile.is_zipfile(path)  # npz = zip; a truncated one lost its directory
    except OSError as error:
        raise ConfigError(f"cannot read '{path}' ({one_line(error)[:160]}): check that it is "
                          f"a readable file, or {_NPZ_FIX}") from error
    if not is_zip:
        what = "the file is empty" if size == 0 else (
            f"not a complete zip archive, {size} bytes: truncated, or another format")
        raise ConfigError(f"'{path}' is not a readable npz file ({what}): {_NPZ_FIX}")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [name for name in ("x", "y") if name not in arrays.files]
            if missing:
                found = ", ".join(repr(name) for name in arrays.files) or "none"
                raise ConfigError(
                    f"'{path}' lacks {'arrays' if len(missing) > 1 else 'array'} "
                    f"{' and '.join(map(repr, missing))} (it has {found}): it must hold "
                    f"arrays {_NPZ_LAYOUT}, as np.savez(path, x=..., y=...) writes; "
                    f"{_NPZ_FIX}")
            images, labels = arrays["x"], arrays["y"]
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - damaged member (bad CRC), object arrays, ...
        raise ConfigError(f"'{path}' is not a readable npz file ({one_line(error)[:160]}): "
                          f"{_NPZ_FIX}") from error
    return _to_split(images, labels, path, num_classes, fix=_NPZ_FIX)


def _to_split(images, labels, where: Path, num_classes: int, fix: str):
    """The arrays as a Split (NCHW uint8, int64 labels), after checking they are CIFAR's."""
    import numpy as np
    import torch

    from lepton_exp.data.base import Split

    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ConfigError(f"images in '{where}' must be uint8 N x H x W x 3 (HWC RGB, as "
                          f"CIFAR's 32 x 32), got {images.dtype} {images.shape}: {fix}")
    if len(images) == 0:
        raise ConfigError(f"'{where}' holds no images: {fix}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"labels in '{where}' must be one integer per image (shape (N,)), "
                          f"got {labels.dtype} {labels.shape}: {fix}")
    if len(labels) != len(images):
        raise ConfigError(f"'{where}' has {len(images)} images but {len(labels)} labels: {fix}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        hint = " (CIFAR-100 files? then use data=cifar100)" if (
            num_classes == 10 and low >= 0 and high < 100) else ""
        raise ConfigError(f"'{where}' has labels {low}..{high}, outside CIFAR-{num_classes}'s "
                          f"0..{num_classes - 1}{hint}: {fix}")
    found = len(np.unique(labels))
    if found != num_classes:
        raise ConfigError(f"'{where}' has {found} classes (labels {low}..{high}) but "
                          f"CIFAR-{num_classes} has {num_classes}: point data.root at the "
                          "matching data set")
    tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return Split(tensor, torch.from_numpy(labels.astype(np.int64)))
