"""Image classification data: normalisation, augmentation and datasets over a split's images,
held in memory as one tensor (CIFAR-10 is 150 MB as uint8) or decoded from files on access
(``lepton_exp.data.folder.FileImages``). Each data set (an entry of ``lepton_exp.data.sets``)
only says how to load its split(s) and which transforms it uses.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from lepton_exp.data.base import ClassificationData, DataInfo, Split
from lepton_exp.data.folder import BadImageError
from lepton_exp.errors import ConfigError


class ImageDataset(Dataset):
    """(image, label) pairs; with ``with_index`` also the sample's index in its split, which
    lets per-sample results (cached teacher outputs) be looked up from a shuffled batch."""

    def __init__(self, split: Split, transform: v2.Transform, with_index: bool = False,
                 random_transform: bool = False, bad_files: Optional[str] = None):
        self.split = split
        self.transform = transform
        self.with_index = with_index
        self.random_transform = random_transform  # the sampler then seeds every draw
        self.bad_files = bad_files  # a directory: skip undecodable files, noting them there

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: int | tuple[int, int]):
        if self.bad_files is None:
            return self._item(key)
        try:
            return self._item(key)
        except BadImageError as error:  # dropped from its batch by skip_bad_items
            note_bad_file(self.bad_files, error.path)
            return None

    def _item(self, key: int | tuple[int, int]):
        if isinstance(key, tuple):  # (index, seed) from a ResumableSampler: a seeded draw
            index, seed = key
            image = seeded(self.transform, self.split.images[index], seed)
        else:
            index, image = key, self.transform(self.split.images[key])
        label = self.split.labels[index]
        return (image, label, index) if self.with_index else (image, label)


def seeded(transform: v2.Transform, image: torch.Tensor, seed: int) -> torch.Tensor:
    """``transform(image)`` with its random draws from ``seed``, the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only (what CPU transforms draw from): torch.manual_seed would
        # also queue lazy CUDA seeding, milliseconds a sample on CUDA builds
        torch.default_generator.manual_seed(seed)
        return transform(image)


def note_bad_file(directory: str, path: str) -> None:
    """Remember a skipped file (DataLoader workers are processes: one file each, appended)."""
    import os

    with open(os.path.join(directory, f"{os.getpid()}.txt"), "a", encoding="utf-8") as notes:
        notes.write(path + "\n")


def skip_bad_items(items: list):
    """The batch without the samples whose files could not be decoded (None)."""
    from torch.utils.data import default_collate

    kept = [item for item in items if item is not None]
    if not kept:
        raise BadImageError("every image of a batch failed to decode: check the data folder "
                            "(data.skip_bad_files=true skips single bad files)")
    return default_collate(kept)


class ImageClassificationData(ClassificationData):
    """Images held in memory as one tensor: normalisation and augmentation live here. A data
    set gives its class count, its default statistics (overridden by data.mean / data.std),
    ``load(cfg) -> (training pool, official test split or None)`` and, when it has random
    training transforms, ``augmentation(cfg, info) -> [transform, ...]``. Hooks rather than
    subclasses: module-level functions pickle (spawned workers, ddp_spawn)."""

    def __init__(self, cfg, *, num_classes: int,
                 load: Callable[[Any], tuple[Split, Optional[Split]]],
                 mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,),
                 augmentation: Optional[Callable[[Any, DataInfo], list]] = None,
                 preprocess: Optional[Callable[[Any], list]] = None,
                 class_names: Sequence[str] = ()):
        super().__init__(cfg)
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.mean, self.std = tuple(mean), tuple(std)
        self._load = load
        self._augmentation = augmentation
        self._preprocess = preprocess
        self._bad_files: Optional[str] = None
        if cfg.get("skip_bad_files"):  # undecodable files are noted here and left out
            import tempfile

            self._bad_files = tempfile.mkdtemp(prefix="lepton-exp-bad-files-")
            self.collate = skip_bad_items

    def skipped_files(self) -> list[str]:
        """The files left out so far because they could not be decoded (sorted)."""
        if self._bad_files is None:
            return []
        from pathlib import Path

        return sorted({line for notes in Path(self._bad_files).glob("*.txt")
                       for line in notes.read_text(encoding="utf-8").splitlines() if line})

    def load(self) -> tuple[Split, Optional[Split]]:
        return self._load(self.cfg)

    @property
    def info(self) -> DataInfo:
        self.setup()
        images = self.train.images
        return DataInfo(num_classes=self.num_classes, in_chans=images.shape[1],
                        image_size=images.shape[-1], class_names=self.class_names)

    # -- transforms ------------------------------------------------------------------------
    def _normalize(self) -> v2.Transform:
        mean = list(self.cfg.mean) if self.cfg.mean is not None else list(self.mean)
        std = list(self.cfg.std) if self.cfg.std is not None else list(self.std)
        channels = self.info.in_chans
        if len(mean) != channels or len(std) != channels:
            raise ConfigError(
                f"data.mean/data.std have {len(mean)}/{len(std)} values but the images have "
                f"{channels} channels: give one value per channel"
            )
        return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def augmentation(self) -> list[v2.Transform]:
        """Training-only random transforms (the data set's; CIFAR: crop + flip)."""
        return self._augmentation(self.cfg, self.info) if self._augmentation else []

    def preprocess(self) -> list[v2.Transform]:
        """Deterministic transforms before normalisation (image folders: resize + center
        crop): every evaluation, and training without augmentation."""
        return self._preprocess(self.cfg) if self._preprocess else []

    @property
    def deterministic_train_transform(self) -> bool:
        return not (self.cfg.augment and self.augmentation())

    def train_transform(self) -> v2.Transform:
        augment = self.augmentation() if self.cfg.augment else []
        return v2.Compose([*(augment or self.preprocess()), self._normalize()])

    def eval_transform(self) -> v2.Transform:
        return v2.Compose([*self.preprocess(), self._normalize()])

    def dataset(self, split: Split, train: bool) -> Dataset:
        transform = self.train_transform() if train else self.eval_transform()
        return ImageDataset(split, transform, with_index=train and self.train_with_index,
                            random_transform=train and not self.deterministic_train_transform,
                            bad_files=self._bad_files)

    def example_batch(self, size: int = 2, full_length: bool = False) -> torch.Tensor:
        dataset = ImageDataset(self.train, self.eval_transform())
        return torch.stack([dataset[index][0] for index in range(min(size, len(dataset)))])
