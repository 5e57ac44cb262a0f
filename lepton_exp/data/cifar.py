"""CIFAR-10/100 from a local directory (npz or torchvision layout) or torchvision's download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from lepton_exp.config import ConfigError
from lepton_exp.data.base import ImageClassificationData, Split

_TORCHVISION_DIRS = {10: "cifar-10-batches-py", 100: "cifar-100-python"}


class CifarData(ImageClassificationData):
    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)

    def augmentation(self):
        return [v2.RandomCrop(self.info.image_size, padding=self.cfg.crop_padding),
                v2.RandomHorizontalFlip()]

    def load(self):
        if self.cfg.root is None:
            raise ConfigError(f"data.root is not set: point it at a {self.cfg.name} directory")
        root = Path(self.cfg.root).expanduser()
        if (root / "train.npz").exists() or (root / "test.npz").exists():
            return _load_npz(root / "train.npz", self.num_classes), _load_npz(
                root / "test.npz", self.num_classes)
        if (root / _TORCHVISION_DIRS[self.num_classes]).is_dir() or self.cfg.download:
            return self._load_torchvision(root, train=True), self._load_torchvision(
                root, train=False)
        raise ConfigError(
            f"{self.cfg.name} not found in '{root}': set data.root to a directory with "
            f"train.npz + test.npz or torchvision's {_TORCHVISION_DIRS[self.num_classes]}/, "
            "or add data.download=true"
        )

    def _load_torchvision(self, root: Path, train: bool) -> Split:
        from torchvision import datasets

        cls = datasets.CIFAR10 if self.num_classes == 10 else datasets.CIFAR100
        try:
            data = cls(str(root), train=train, download=self.cfg.download)
        except Exception as error:  # noqa: BLE001 - network or archive errors, one line
            raise ConfigError(f"could not load {self.cfg.name} from '{root}' "
                              f"(download={self.cfg.download}): {error}") from error
        return _to_split(np.asarray(data.data), np.asarray(data.targets), root, self.num_classes)


class Cifar100Data(CifarData):
    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)


def _load_npz(path: Path, num_classes: int) -> Split:
    if not path.exists():
        raise ConfigError(f"'{path}' is missing: the npz layout needs train.npz and test.npz")
    try:
        with np.load(path) as arrays:
            images, labels = arrays["x"], arrays["y"]
    except KeyError as error:
        raise ConfigError(
            f"'{path}' must hold arrays 'x' (N,32,32,3 uint8) and 'y' (N,)") from error
    except Exception as error:  # noqa: BLE001 - truncated / not an npz
        raise ConfigError(f"'{path}' is not a readable npz file ({error}): re-create it") from error
    return _to_split(images, labels, path, num_classes)


def _to_split(images: np.ndarray, labels: np.ndarray, where: Path, num_classes: int) -> Split:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ConfigError(f"images in '{where}' must be uint8 N x H x W x 3, "
                          f"got {images.dtype} {images.shape}")
    if len(labels) != len(images):
        raise ConfigError(f"'{where}' has {len(images)} images but {len(labels)} labels")
    found = len(np.unique(labels))
    if labels.min() < 0 or labels.max() >= num_classes or found != num_classes:
        raise ConfigError(f"'{where}' has {found} classes (labels {labels.min()}.."
                          f"{labels.max()}) but CIFAR-{num_classes} has {num_classes}: "
                          "point data.root at the matching data set")
    tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return Split(tensor, torch.from_numpy(labels.astype(np.int64)))
