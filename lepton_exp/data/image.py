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
from lepton_exp.data.batch_transforms import BatchTransform, RawImages, batch_equivalents
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


class ImageBatches(Dataset):
    """A split held as one tensor, read a batch at a time (``__getitems__``: the DataLoader
    hands over the batch's keys at once): the batch is cut from the tensor in one indexing
    op and transformed whole (``lepton_exp.data.batch_transforms``), here on CPU or, with
    ``on_device``, after it reached the training device."""

    makes_batches = True  # (loader workers would only copy its batches between processes)

    def __init__(self, split: Split, transform: BatchTransform, with_index: bool = False,
                 random_transform: bool = False, on_device: bool = False):
        self.split = split
        self.transform = transform
        self.with_index = with_index
        self.random_transform = random_transform  # the sampler pairs keys with seeds
        self.on_device = on_device

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key):
        images, labels, *index = self.__getitems__([key])
        return (images[0], labels[0], *(i[0] for i in index))

    def __getitems__(self, keys: list):
        if keys and isinstance(keys[0], tuple):  # (index, seed) pairs: seeded draws
            indices = [index for index, _ in keys]
            choices = self.transform.choices([seed for _, seed in keys])
        else:
            indices, choices = list(keys), None
        index = torch.as_tensor(indices, dtype=torch.long)
        raw = RawImages(self.split.images[index], choices, self.split.labels[index],
                        index if self.with_index else None)
        return raw if self.on_device else self.transform(raw)


def _whole_batch(batch):
    """The collate step of ImageBatches: its batch is made already."""
    return batch


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
        self._batch_transform: BatchTransform | None | bool = False  # False: not made yet
        if cfg.get("skip_bad_files"):  # undecodable files are noted here and left out
            import shutil
            import tempfile
            import weakref

            self._bad_files = tempfile.mkdtemp(prefix="lepton-exp-bad-files-")
            # removed with this object (or at exit); loader workers' copies are not its owner
            weakref.finalize(self, shutil.rmtree, self._bad_files, ignore_errors=True)
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
    def normalization(self) -> tuple[list[float], list[float]]:
        """(mean, std) per channel, applied to pixel values scaled to [0, 1]."""
        mean = list(self.cfg.mean) if self.cfg.mean is not None else list(self.mean)
        std = list(self.cfg.std) if self.cfg.std is not None else list(self.std)
        return mean, std

    def input_description(self) -> dict[str, Any]:
        info = self.info
        mean, std = self.normalization()
        return {**super().input_description(), "layout": "NCHW", "channels": info.in_chans,
                "channel_order": "RGB" if info.in_chans == 3 else "grey",
                "image_size": info.image_size, "value_range": [0, 1],
                "preprocess": "pixel values scaled to [0, 1] (8-bit images: / 255), then "
                              "(x - mean) / std per channel",
                "mean": mean, "std": std}

    def _normalize(self) -> v2.Transform:
        mean, std = self.normalization()
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
        random_transform = train and not self.deterministic_train_transform
        batch_transform = self.batch_transform()
        if batch_transform is not None and isinstance(split.images, torch.Tensor):
            return ImageBatches(split, batch_transform,
                                with_index=train and self.train_with_index,
                                random_transform=random_transform,
                                on_device=self._on_gpu())
        transform = self.train_transform() if train else self.eval_transform()
        return ImageDataset(split, transform, with_index=train and self.train_with_index,
                            random_transform=random_transform, bad_files=self._bad_files)

    def batch_transform(self) -> BatchTransform | None:
        """The transforms as batch operations (``data.batch_transforms``), when every one
        has a batch form; None: per sample, in the loader (torchvision v2)."""
        if self._batch_transform is False:
            steps = None
            if self.cfg.get("batch_transforms", True) and not self.preprocess() and \
                    self._bad_files is None:
                steps = batch_equivalents(self.augmentation() if self.cfg.augment else [])
            size = self.info.image_size
            self._batch_transform = None if steps is None else BatchTransform(
                steps, self._normalize(), (size, size))
        return self._batch_transform

    def collate_for(self, dataset: Dataset):
        return _whole_batch if getattr(dataset, "makes_batches", False) else self.collate

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # ImageBatches on a GPU: the batch is cropped, flipped and normalised where it is now
        return self.batch_transform()(batch) if isinstance(batch, RawImages) else batch

    def example_batch(self, size: int = 2, full_length: bool = False) -> torch.Tensor:
        dataset = ImageDataset(self.train, self.eval_transform())
        return torch.stack([dataset[index][0] for index in range(min(size, len(dataset)))])
