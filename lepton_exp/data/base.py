"""In-memory image classification data: split once (deterministically), serve via Lightning.

Every image data set here is small enough to hold in memory as one tensor (CIFAR-10 is
150 MB as uint8), so each data set (an entry of ``lepton_exp.data.sets``) only has to say how
to load arrays; splitting, subsetting, normalisation, augmentation and loaders live here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.model_selection import train_test_split
from sklearn.utils import resample
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torchvision.transforms import v2

from lepton_exp.errors import ConfigError, one_line


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about the data it will see (images: channels and size;
    text: the tokenizer's vocabulary and the longest sequence)."""

    num_classes: int
    in_chans: int = 0
    image_size: int = 0
    vocab_size: int = 0
    max_length: int = 0
    # what class id i means (the record and exported models carry it); () when unnamed
    class_names: tuple[str, ...] = ()

    @property
    def is_text(self) -> bool:
        return self.vocab_size > 0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_chans, self.image_size, self.image_size)


@dataclass
class Split:
    images: torch.Tensor  # N x C x H x W, uint8 (0..255) or float (0..1)
    labels: torch.Tensor  # N, int64

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> "Split":
        index = torch.as_tensor(indices, dtype=torch.long)
        return Split(self.images[index], self.labels[index])


class ImageDataset(Dataset):
    """(image, label) pairs; with ``with_index`` also the sample's index in its split, which
    lets per-sample results (cached teacher outputs) be looked up from a shuffled batch."""

    def __init__(self, split: Split, transform: v2.Transform, with_index: bool = False,
                 random_transform: bool = False):
        self.split = split
        self.transform = transform
        self.with_index = with_index
        self.random_transform = random_transform  # the sampler then seeds every draw

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: int | tuple[int, int]):
        if isinstance(key, tuple):  # (index, seed) from a ResumableSampler: a seeded draw
            index, seed = key
            with torch.random.fork_rng(devices=[]):
                # the CPU generator only (what CPU transforms draw from): torch.manual_seed
                # would also queue lazy CUDA seeding, milliseconds a sample on CUDA builds
                torch.default_generator.manual_seed(seed)
                image = self.transform(self.split.images[index])
        else:
            index, image = key, self.transform(self.split.images[key])
        label = self.split.labels[index]
        return (image, label, index) if self.with_index else (image, label)


def stratified_split(labels: np.ndarray, size: float, seed: int,
                     key: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out) with `size` held out (a fraction if < 1, else a count),
    every class in proportion on both sides. `key` names the setting in errors."""
    held: float | int = int(size) if size >= 1 else size
    try:
        kept, held_out = train_test_split(np.arange(len(labels)), test_size=held,
                                          random_state=seed, stratify=labels, shuffle=True)
    except ValueError as error:  # too few samples on one side for every class to appear
        classes = len(np.unique(labels))
        raise ConfigError(f"{key}={size} cannot split {len(labels)} samples of {classes} "
                          f"classes so that each side has every class: {one_line(error)}"
                          ) from error
    return np.sort(kept), np.sort(held_out)


def stratified_subset(labels: np.ndarray, size: int, seed: int, key: str) -> np.ndarray:
    """`size` indices, every class in proportion (drawn without replacement)."""
    classes = len(np.unique(labels))
    if size < classes:
        raise ConfigError(f"{key}={size} is smaller than the {classes} classes: raise it")
    chosen = resample(np.arange(len(labels)), replace=False, n_samples=size, stratify=labels,
                      random_state=seed)
    return np.sort(chosen)


class ResumableSampler(Sampler):
    """The training order of ``sampler`` (one seeded permutation per epoch), leaving out the
    positions a resumed epoch already trained (``skip``, once), and with ``seeded`` pairing
    every index with a seed for its random augmentation: (run seed, epoch, index) decide the
    crop and flip, not the global RNG, so neither worker processes, the loader's prefetch nor
    a resume change what a sample looks like."""

    def __init__(self, sampler: DistributedSampler, seeded: bool):
        self.sampler = sampler
        self.seeded = seeded
        # Samples the next epoch leaves out: one counter shared with the data module (and any
        # other loader it makes), so whichever loader starts the epoch uses it up.
        self.pending = [0]

    @property
    def skip(self) -> int:
        return self.pending[0]

    @skip.setter
    def skip(self, samples: int) -> None:
        self.pending[0] = samples

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        # (runs at the epoch's first batch, after Lightning's set_epoch and any resume)
        skip, self.skip = self.skip, 0
        epoch, base = self.sampler.epoch, self.sampler.seed
        for position, index in enumerate(self.sampler):
            if position < skip:
                continue
            if self.seeded:  # distinct per (run seed, epoch, index), and a valid torch seed
                yield index, ((base * 1_000_003 + epoch) * 10_000_019 + index) % 2**63
            else:
                yield index


def loader_workers(setting: int | str) -> int:
    """DataLoader worker processes for ``data.num_workers``: a number, or ``auto`` = the CPU
    cores this process may use, shared among the DDP processes of this node (at most 8:
    more rarely helps and each costs memory)."""
    if setting != "auto":
        return int(setting)
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, cores // max(1, local_processes)))


def shard_sampler(dataset: Dataset, train: bool) -> Optional[Sampler]:
    """This process's share of ``dataset`` (Lightning's sampler replacement is off).

    Training: one seeded permutation per epoch (the seed of ``seed_everything``), of which
    DDP rank r takes positions r, r+W, ...: the samples of one optimiser step over W
    processes with batch B are those of one process with batch W*B, so a DDP run computes
    what the single-process run with the effective batch computes. Evaluation: every sample
    exactly once over the ranks (Lightning's default sampler pads with repeats)."""
    import torch.distributed as dist

    world, rank = ((dist.get_world_size(), dist.get_rank())
                   if dist.is_available() and dist.is_initialized() else (1, 0))
    if train:
        # drop_last: up to world-1 samples per epoch left out instead of padded with repeats,
        # which could add a step one process with the effective batch does not take
        return ResumableSampler(
            DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                               seed=torch.initial_seed() % 2**63, drop_last=True),
            seeded=getattr(dataset, "random_transform", False))
    if world == 1:
        return None
    from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)


class ClassificationData(pl.LightningDataModule):
    """Base LightningDataModule: a training pool and a test split (:meth:`load`), split into
    train/val/test once, deterministically, with stratified subsets; subclasses say how a
    split becomes a dataset (:meth:`dataset`) and batches (:meth:`collate`)."""

    num_classes: int = 0
    class_names: tuple[str, ...] = ()

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.train = None
        self.val = None
        self.test = None
        self.train_with_index = False  # training batches carry sample indices (3-tuples)
        self._pending_skip = [0]  # training samples the next training epoch leaves out

    def resume_within_epoch(self, batches: int) -> None:
        """The next training epoch starts ``batches`` in (a resumed run). Also applies to a
        loader made already (a module's setup may ask for it before the checkpoint loads):
        its sampler decides what to leave out when the epoch's first batch is drawn."""
        self._pending_skip[0] = batches * self.cfg.batch_size

    # -- to implement ----------------------------------------------------------------------
    def load(self):
        """Return (training pool, official test split or None)."""
        raise NotImplementedError

    def dataset(self, split, train: bool) -> Dataset:
        raise NotImplementedError

    @property
    def info(self) -> DataInfo:
        raise NotImplementedError

    def example_batch(self, size: int = 2, full_length: bool = False):
        """The first training samples, without augmentation: the input of dry forward passes
        (``full_length``: text at its maximum length, where latency is measured)."""
        raise NotImplementedError

    collate = None  # the DataLoader's collate_fn (None: torch's default)

    #: why teacher outputs cannot be cached per sample, when they cannot (None: they can)
    no_output_cache_reason: Optional[str] = None

    # -- splitting -------------------------------------------------------------------------
    def setup(self, stage: Optional[str] = None) -> None:
        if self.train is not None:
            return
        pool, test = self.load()
        seed = self.cfg.split_seed
        if test is None:  # carve a test split first, so val_size means the same everywhere
            keep, held = stratified_split(pool.labels.numpy(), self.cfg.test_size, seed,
                                          "data.test_size")
            pool, test = pool.take(keep), pool.take(held)
        val = None
        if isinstance(pool, tuple):  # an official validation split too (train, val)
            pool, val = pool
        else:
            keep, held = stratified_split(pool.labels.numpy(), self.cfg.val_size, seed,
                                          "data.val_size")
            pool, val = pool.take(keep), pool.take(held)
        splits = {"train": pool, "val": val, "test": test}
        for name, split in splits.items():
            size = self.cfg.get(f"{name}_subset")
            if size and size < len(split):
                splits[name] = split.take(stratified_subset(
                    split.labels.numpy(), size, seed, f"data.{name}_subset"))
        self.train, self.val, self.test = splits["train"], splits["val"], splits["test"]

    @property
    def deterministic_train_transform(self) -> bool:
        """Whether a training sample looks the same every epoch (no random augmentation)."""
        return True

    # -- loaders ---------------------------------------------------------------------------
    def _loader(self, split, train: bool) -> DataLoader:
        batch_size = self.cfg.batch_size if train else (
            self.cfg.eval_batch_size or self.cfg.batch_size)
        dataset = self.dataset(split, train)
        workers = loader_workers(self.cfg.num_workers)
        sampler = shard_sampler(dataset, train)
        if isinstance(sampler, ResumableSampler):
            sampler.pending = self._pending_skip
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler,
            drop_last=train and len(sampler or split) > batch_size,
            num_workers=workers, persistent_workers=workers > 0,
            pin_memory=self._on_gpu(), collate_fn=self.collate,
            # its own generator: making an iterator draws a seed, which must not move the
            # global RNG that dropout and the losses use (an exact resume restores that one)
            generator=torch.Generator().manual_seed(torch.initial_seed() % 2**63) if train
            else None,
        )

    def _on_gpu(self) -> bool:
        """Whether batches go to a CUDA device (then pinned memory speeds the copy)."""
        strategy = getattr(self.trainer, "strategy", None)  # None before a Trainer attaches
        return getattr(getattr(strategy, "root_device", None), "type", "cpu") == "cuda"

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test, train=False)


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
                 class_names: Sequence[str] = ()):
        super().__init__(cfg)
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.mean, self.std = tuple(mean), tuple(std)
        self._load = load
        self._augmentation = augmentation

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

    @property
    def deterministic_train_transform(self) -> bool:
        return not (self.cfg.augment and self.augmentation())

    def train_transform(self) -> v2.Transform:
        augment = self.augmentation() if self.cfg.augment else []
        return v2.Compose([*augment, self._normalize()])

    def eval_transform(self) -> v2.Transform:
        return self._normalize()

    def dataset(self, split: Split, train: bool) -> Dataset:
        transform = self.train_transform() if train else self.eval_transform()
        return ImageDataset(split, transform, with_index=train and self.train_with_index,
                            random_transform=train and not self.deterministic_train_transform)

    def example_batch(self, size: int = 2, full_length: bool = False) -> torch.Tensor:
        dataset = ImageDataset(self.train, self.eval_transform())
        return torch.stack([dataset[index][0] for index in range(min(size, len(dataset)))])
