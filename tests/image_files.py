"""Test helpers that write image folders (torchvision's ImageFolder layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray,
                       class_names: Sequence[str], suffix: str = ".png") -> Path:
    """``images`` (N x H x W x 3 uint8, HWC RGB) as ``root/<class name>/<index>.png``, index
    padded so that file order is array order within a class. PNG is lossless: reading the
    files back gives the arrays' pixels."""
    for name in class_names:
        (root / name).mkdir(parents=True, exist_ok=True)
    width = len(str(len(images)))
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image).save(root / class_names[int(label)] / f"{index:0{width}d}{suffix}")
    return root


def cifar_as_folders(cifar_dir: Path, out: Path, per_class_train: int, per_class_test: int,
                     class_names: Sequence[str]) -> tuple[Path, Path]:
    """The first images of each class of CIFAR-10 (``cifar_dir``: train.npz + test.npz) as
    PNG folders ``out/png/{train,test}/<class>/`` and the same images as npz files
    ``out/npz/{train,test}.npz`` in class order (the order the folders list them in)."""
    for split, per_class in (("train", per_class_train), ("test", per_class_test)):
        with np.load(cifar_dir / f"{split}.npz") as arrays:
            x, y = arrays["x"], arrays["y"]
        keep = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(10)])
        (out / "npz").mkdir(parents=True, exist_ok=True)
        np.savez(out / "npz" / f"{split}.npz", x=x[keep], y=y[keep])
        write_image_folder(out / "png" / split, x[keep], y[keep], class_names)
    return out / "png", out / "npz"


def random_images(count: int, classes: int, size: tuple[int, int] = (40, 48),
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class-conditional random images (class c is brighter), so a model can learn them."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    images = (rng.random((count, *size, 3)) * 80 + labels[:, None, None, None] * (150 // classes))
    return images.astype(np.uint8), labels
