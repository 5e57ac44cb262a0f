"""Images decoded lazily from files: a folder's manifest, decoding, ImageNet-style transforms.

``FileImages`` stands where an in-memory data set keeps its image tensor (``Split.images``):
indexing it decodes one file, so the generic data module (lepton_exp.data.base) splits,
subsets, shards, seeds and resumes a folder of files exactly as it does CIFAR's arrays, and
only the DataLoader workers ever hold decoded images. Paths live in one numpy array, not a
list of Python strings: forked workers then share its pages instead of copying them as
reference counts change (the classic "memory grows with workers" trap).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from lepton_exp.digest import short_hash
from lepton_exp.errors import ConfigError, one_line

# torchvision's ImageFolder extensions (lower case)
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class BadImageError(ConfigError):
    """An image file that cannot be decoded (``data.skip_bad_files=true`` skips it)."""

    def __init__(self, message: str, path: str = ""):
        if "Original Traceback" in message:  # re-raised from a DataLoader worker: the
            last = message.strip().splitlines()[-1]  # traceback's last line is the message
            message = last.split(": ", 1)[-1]
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class Manifest:
    """The files of a class-per-subfolder tree: paths (relative to ``root``), class ids,
    sizes and modification times, in a stable (sorted) order."""

    root: Path
    classes: tuple[str, ...]
    paths: np.ndarray  # relative paths, numpy unicode array
    labels: np.ndarray  # int64 class ids
    sizes: np.ndarray  # bytes
    mtimes: np.ndarray  # ns

    def __len__(self) -> int:
        return len(self.paths)

    def digest(self) -> str:
        """Identity of the tree: paths, sizes and mtimes (never the files' bytes)."""
        material = json.dumps([str(self.root.resolve()), list(self.classes)])
        return short_hash(material + short_hash(self.paths.tobytes() + self.labels.tobytes()
                                                 + self.sizes.tobytes()
                                                 + self.mtimes.tobytes(), 64), 16)


def scan_folder(root: Path, classes: Optional[Sequence[str]] = None,
                key: str = "data.root") -> Manifest:
    """The manifest of ``root/<class>/**/<image>``. ``classes``: the class names to expect
    (a val/test folder takes the training folder's); None: the subfolders, sorted."""
    if not root.is_dir():
        raise ConfigError(f"{key}: '{root}' is not a directory: point it at a folder with one "
                          "subfolder of images per class")
    found = sorted(entry.name for entry in os.scandir(root)
                   if entry.is_dir() and not entry.name.startswith("."))
    if classes is None:
        if not found:
            raise ConfigError(f"'{root}' has no class subfolders: put each class's images in "
                              f"'{root}/<class name>/'")
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise ConfigError(f"'{root / extra[0]}' is a class the training folder does not "
                              f"have: add it to the training folder, or remove it here")
    paths, labels, sizes, mtimes = [], [], [], []
    for label, name in enumerate(classes):
        count = len(paths)
        folder = root / name
        for directory, subdirs, files in os.walk(folder, followlinks=True):
            subdirs.sort()
            for file in sorted(files):
                if file.lower().endswith(EXTENSIONS) and not file.startswith("."):
                    stat = os.stat(os.path.join(directory, file))
                    paths.append(os.path.relpath(os.path.join(directory, file), root))
                    labels.append(label)
                    sizes.append(stat.st_size)
                    mtimes.append(stat.st_mtime_ns)
        if len(paths) == count and folder.is_dir():
            raise ConfigError(f"class folder '{folder}' has no images ({', '.join(EXTENSIONS)}):"
                              " add its images, or remove the folder")
    return Manifest(root, tuple(classes), np.array(paths), np.array(labels, dtype=np.int64),
                    np.array(sizes, dtype=np.int64), np.array(mtimes, dtype=np.int64))


def decode(path: str) -> torch.Tensor:
    """The image at ``path`` as uint8 RGB, C x H x W (torchvision's decoders; PIL for the
    formats they lack). A BadImageError names the file when it cannot be decoded."""
    try:
        try:
            return decode_image(path, mode=ImageReadMode.RGB)
        except RuntimeError:  # a format torchvision.io does not decode (BMP, TIFF, PPM ...)
            from PIL import Image

            with Image.open(path) as image:
                return v2.functional.pil_to_tensor(image.convert("RGB"))
    except Exception as error:  # noqa: BLE001 - truncated, not an image, unreadable
        raise BadImageError(f"cannot decode image '{path}' ({one_line(error)[:120]}): replace "
                            "or remove the file, or set data.skip_bad_files=true", path) from error


def decode_bytes(data: bytes, name: str) -> torch.Tensor:
    """An encoded image held in memory (a shard's item: the file's original bytes) as
    ``decode`` reads a file; ``name`` says where it came from in a BadImageError."""
    try:
        try:
            return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                mode=ImageReadMode.RGB)
        except RuntimeError:  # a format torchvision.io does not decode (BMP, TIFF, PPM ...)
            import io

            from PIL import Image

            with Image.open(io.BytesIO(data)) as image:
                return v2.functional.pil_to_tensor(image.convert("RGB"))
    except Exception as error:  # noqa: BLE001 - truncated, not an image
        raise BadImageError(f"cannot decode image {name} ({one_line(error)[:120]}): rewrite the "
                            "shards without it, or set data.skip_bad_files=true", name) from error


class FileImages:
    """A sequence of images decoded on access: the lazy ``Split.images`` of a folder."""

    def __init__(self, root: Path, paths: np.ndarray, image_size: int):
        self.root = str(root)
        self.paths = paths
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """What the models see after the transforms: N x 3 x size x size."""
        return (len(self.paths), 3, self.image_size, self.image_size)

    def __getitem__(self, index) -> "torch.Tensor | FileImages":
        if isinstance(index, torch.Tensor) and index.ndim == 1:  # Split.take: a subset
            return FileImages(Path(self.root), self.paths[index.numpy()], self.image_size)
        return decode(os.path.join(self.root, str(self.paths[int(index)])))


def train_augmentation(image_size: int, crop_scale: Sequence[float]) -> list[v2.Transform]:
    """ImageNet training augmentation: a random resized crop and a horizontal flip."""
    return [v2.RandomResizedCrop(image_size, scale=tuple(crop_scale), antialias=True),
            v2.RandomHorizontalFlip()]


def eval_preprocess(image_size: int, resize_size: Optional[int]) -> list[v2.Transform]:
    """ImageNet evaluation: resize the short side (default size / 0.875: 224 -> 256), then a
    center crop."""
    resize = resize_size or round(image_size / 0.875)
    return [v2.Resize(resize, antialias=True), v2.CenterCrop(image_size)]
