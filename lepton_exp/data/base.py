"""What every data module shares: split once (deterministically, stratified), subsets,
resumable seeded sampling, DDP sharding and loaders. Images: ``lepton_exp.data.image``;
text: ``lepton_exp.data.text``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.model_selection import train_test_split
from sklearn.utils import resample
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

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
    # metrics by name (lepton_exp.training.classify), the first one picks the best epoch;
    # () = accuracy (+ top-5 above 10 classes; text: + macro F1, MCC)
    metrics: tuple[str, ...] = ()
    # one real-valued output (num_classes=1), float labels, MSE loss (GLUE STS-B)
    regression: bool = False
    # further labelled test splits, reported as test_<name>/* (MNLI: mismatched)
    extra_tests: tuple[str, ...] = ()

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
        # Samples the next epoch leaves out, and that epoch's number (None: Lightning's
        # set_epoch): shared with the data module (and any other loader it makes), so
        # whichever loader starts the epoch uses them up.
        self.pending: list = [0, None]

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
        # Runs when the epoch's first batch is drawn; a worker process's loader draws it as
        # it is made, which on a resume is before Lightning's set_epoch: hence the epoch
        # the resumed run passed on.
        skip, resumed_epoch = self.pending
        self.pending[:] = [0, None]
        if resumed_epoch is not None:
            self.sampler.set_epoch(resumed_epoch)
        epoch, base = self.sampler.epoch, self.sampler.seed
        for position, index in enumerate(self.sampler):
            if position < skip:
                continue
            if self.seeded:
                yield index, sample_seed(base, epoch, index)
            else:
                yield index


def sample_seed(run_seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's random augmentation in one epoch: distinct per (run seed,
    epoch, index), and a valid torch seed."""
    return ((run_seed * 1_000_003 + epoch) * 10_000_019 + index) % 2**63


def loader_workers(setting: int | str, makes_batches: bool = False) -> int:
    """DataLoader worker processes for ``data.num_workers``: a number, or ``auto`` = none for
    a data set that cuts whole batches from memory (``makes_batches``: workers would only
    copy them between processes), else the CPU cores this process may use, shared among the
    DDP processes of this node (at most 8: more rarely helps and each costs memory)."""
    if setting != "auto":
        return int(setting)
    if makes_batches:
        return 0
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
    regression = False  # float targets: splits and subsets are random, not stratified

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.train = None
        self.val = None
        self.test = None
        self.extra_tests: dict = {}  # name -> further test split (MNLI: mismatched)
        self.train_with_index = False  # training batches carry sample indices (3-tuples)
        # training samples the next training epoch leaves out, and its epoch number
        self._pending_skip: list = [0, None]

    def resume_within_epoch(self, batches: int, epoch: Optional[int] = None) -> None:
        """The next training epoch (number ``epoch``) starts ``batches`` in (a resumed run).
        Also applies to a loader made already (a module's setup may ask for it before the
        checkpoint loads): its sampler decides what to leave out when the epoch's first
        batch is drawn."""
        self._pending_skip[:] = [batches * self.cfg.batch_size, epoch]

    # -- to implement ----------------------------------------------------------------------
    def load(self):
        """Return (training pool, official test split or None). Several test splits: a dict
        ``{"test": main split, "test_<name>": further split, ...}``."""
        raise NotImplementedError

    def dataset(self, split, train: bool) -> Dataset:
        raise NotImplementedError

    @property
    def info(self) -> DataInfo:
        raise NotImplementedError

    def input_description(self) -> dict[str, Any]:
        """What a model trained on this data takes and what its outputs mean: every export
        carries it (``model.safetensors``' metadata, ``deploy/inputs.json``), so a reloaded
        model is fed as in training. Image and text data add their preprocessing."""
        info = self.info
        return {"class_names": list(info.class_names) or None, "num_classes": info.num_classes}

    def example_batch(self, size: int = 2, full_length: bool = False):
        """The first training samples, without augmentation: the input of dry forward passes
        (``full_length``: text at its maximum length, where latency is measured)."""
        raise NotImplementedError

    def unaugmented_batches(self, batches: int) -> list:
        """The first ``batches`` training batches of ``data.batch_size``, without
        augmentation: inference inputs (int8 calibration)."""
        size = self.cfg.batch_size
        samples = self.example_batch(batches * size)
        if isinstance(samples, dict):
            return [{key: value[start:start + size] for key, value in samples.items()}
                    for start in range(0, len(next(iter(samples.values()))), size)]
        return [chunk for chunk in samples.split(size) if len(chunk) > 0]

    collate = None  # the DataLoader's collate_fn (None: torch's default)

    def collate_for(self, dataset: Dataset):
        """The collate_fn of a loader over ``dataset`` (``collate`` unless the data set
        makes whole batches itself)."""
        return self.collate

    #: why teacher outputs cannot be cached per sample, when they cannot (None: they can)
    no_output_cache_reason: Optional[str] = None

    # -- splitting -------------------------------------------------------------------------
    def setup(self, stage: Optional[str] = None) -> None:
        if self.train is not None:
            return
        pool, test = self.load()
        tests = dict(test) if isinstance(test, dict) else {"test": test}
        test = tests.pop("test", None)
        seed = self.cfg.split_seed
        if test is None:  # carve a test split first, so val_size means the same everywhere
            train = pool[0] if isinstance(pool, tuple) else pool  # (train, official val)
            keep, held = stratified_split(self._strata(train), self.cfg.test_size, seed,
                                          "data.test_size")
            test = train.take(held)
            pool = (train.take(keep), pool[1]) if isinstance(pool, tuple) else train.take(keep)
        val = None
        if isinstance(pool, tuple):  # an official validation split too (train, val)
            pool, val = pool
        else:
            keep, held = stratified_split(self._strata(pool), self.cfg.val_size, seed,
                                          "data.val_size")
            pool, val = pool.take(keep), pool.take(held)
        splits = {"train": pool, "val": val, "test": test, **tests}
        for name, split in splits.items():
            key = "test_subset" if name.startswith("test") else f"{name}_subset"  # every test
            size = self.cfg.get(key)
            if size and size < len(split):
                splits[name] = split.take(stratified_subset(self._strata(split), size, seed,
                                                            f"data.{key}"))
        self.train, self.val, self.test = splits["train"], splits["val"], splits["test"]
        self.extra_tests = {name.removeprefix("test_"): splits[name] for name in tests}

    def _strata(self, split) -> np.ndarray:
        """What splits and subsets stratify by: the labels; one stratum (a plain random
        draw) for regression targets."""
        return np.zeros(len(split)) if self.regression else split.labels.numpy()

    @property
    def deterministic_train_transform(self) -> bool:
        """Whether a training sample looks the same every epoch (no random augmentation)."""
        return True

    # -- loaders ---------------------------------------------------------------------------
    def _loader(self, split, train: bool) -> DataLoader:
        batch_size = self.cfg.batch_size if train else (
            self.cfg.eval_batch_size or self.cfg.batch_size)
        dataset = self.dataset(split, train)
        workers = loader_workers(self.cfg.num_workers, getattr(dataset, "makes_batches", False))
        sampler = shard_sampler(dataset, train)
        if isinstance(sampler, ResumableSampler):
            sampler.pending = self._pending_skip
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler,
            drop_last=train and len(sampler or split) > batch_size,
            num_workers=workers, persistent_workers=workers > 0,
            pin_memory=self._on_gpu(), collate_fn=self.collate_for(dataset),
            # its own generator: making an iterator draws a seed, which must not move the
            # global RNG that dropout and the losses use (an exact resume restores that one)
            generator=torch.Generator().manual_seed(torch.initial_seed() % 2**63) if train
            else None,
        )

    def _on_gpu(self) -> bool:
        """Whether batches go to a CUDA device (then pinned memory speeds the copy)."""
        strategy = getattr(self.trainer, "strategy", None)  # None before a Trainer attaches
        return getattr(getattr(strategy, "root_device", None), "type", "cpu") == "cuda"

    def transfer_batch_to_device(self, batch: Any, device: torch.device,
                                 dataloader_idx: int) -> Any:
        # Lightning calls this at every batch; its own walks the batch to move each tensor to
        # where it is already on a CPU run (~10 us a step, twice that after a step's compute)
        if device.type == "cpu":  # (the loaders' batches are on the CPU)
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val, train=False)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """The test split's loader, or one per test split (the main one first, then
        ``extra_tests`` in order: the module's test step tells them apart)."""
        if not self.extra_tests:
            return self._loader(self.test, train=False)
        return [self._loader(split, train=False)
                for split in (self.test, *self.extra_tests.values())]
