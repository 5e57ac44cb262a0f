"""Classification data streamed from LitData shards (``lepton_exp.data.shards`` writes them):
data larger than a node's disk or memory, from a local directory or object storage.

Sharding: LitData's StreamingDataset gives every DDP rank, and every loader worker of it, an
interval of the split's samples. Training shuffles (the chunks, then the samples inside each
chunk: a new order every epoch, from the run seed) and gives every rank the same number of
full batches, as DDP needs: an epoch leaves out fewer than world size x batch size samples (the
in-memory path leaves out fewer than world size). Evaluation reads every sample exactly once
over ranks and workers, in order.

Random augmentation is seeded per sample by (run seed, epoch, the sample's stored index) as
in the in-memory path (lepton_exp.data.base.ResumableSampler), so neither workers nor a
resume change what a sample looks like. The training epochs are the trainer's, so a run
resumed at an epoch's end goes on with the next epoch's order; one stopped mid-epoch has
LitData replay the interrupted epoch's deal and leave out the batches it trained (with the
same world size, workers and batch size: then it ends exactly as the uninterrupted run).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from litdata import StreamingDataLoader, StreamingDataset
from litdata.utilities.env import _DistributedEnv
from torch.utils.data import default_collate

from lepton_exp.data.base import DataInfo, loader_workers, sample_seed
from lepton_exp.data.folder import BadImageError, decode_bytes
from lepton_exp.data.image import ImageClassificationData, note_bad_file, seeded
from lepton_exp.data.shards import SPLITS, read_meta, split_location
from lepton_exp.data.text import TextClassificationData, encode
from lepton_exp.errors import ConfigError

# LitData reports every data set it opens (cache budget, memory mapping) at INFO
logging.getLogger("litdata").setLevel(logging.WARNING)
# Lightning's caution about IterableDataset lengths with workers: LitData deals each worker
# its own samples, so the length is exact
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")


@dataclass(frozen=True)
class ShardSplit:
    """One split's shards: where they are, our JSON about them, the samples used of them
    (``subset``: the first ones stored, a seeded random choice)."""

    location: str
    meta: dict
    subset: Optional[int] = None

    def __len__(self) -> int:
        return min(self.meta["samples"], self.subset or self.meta["samples"])


ENTRIES = {"image": "shards", "text": "text_shards"}  # the data set reading each kind


def shard_splits(cfg, kind: Optional[str] = None) -> dict[str, ShardSplit]:
    """train/val/test under ``cfg.root`` (shards of ``kind``: image or text; None: either),
    with the class names they agree on."""
    if not cfg.root:
        raise ConfigError("data.root is not set: point it at the directory (or s3:// URL) "
                          "with the train/ val/ test/ shards")
    splits = {}
    for name in SPLITS:
        location = split_location(cfg.root, name)
        subset = cfg.get(f"{name}_subset")
        meta = read_meta(location, f"data.root/{name}", kind or "image")
        splits[name] = ShardSplit(location, meta, subset)
        found = splits[name].meta.get("kind")
        if kind is not None and found != kind:
            raise ConfigError(f"data.root: {location} holds {found} shards: read them with "
                              f"data={ENTRIES.get(found, found)}")
    names = splits["train"].meta["class_names"]
    for name in SPLITS[1:]:
        if splits[name].meta["class_names"] != names:
            raise ConfigError(f"data.root: {splits[name].location} has other classes than "
                              f"{splits['train'].location}: write all splits from one source")
    return splits


def distributed_env() -> _DistributedEnv:
    """This process's place among the DDP ranks (LitData's own detection reads WORLD_SIZE
    before the process group exists and then takes every rank for rank 0)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return _DistributedEnv(1, 0, 1)
    world = dist.get_world_size()
    return _DistributedEnv(world, dist.get_rank(), nodes(world))


def nodes(world: int) -> int:
    """The nodes a run of ``world`` processes spans: torchrun's LOCAL_WORLD_SIZE, else
    SLURM's node count (its multi-node jobs start one task per process), else one."""
    if "LOCAL_WORLD_SIZE" in os.environ:
        return max(1, world // max(1, int(os.environ["LOCAL_WORLD_SIZE"])))
    return max(1, min(world, int(os.environ.get("SLURM_NNODES") or 1)))


class ShardDataset(StreamingDataset):
    """A split's stored items made into samples by ``prepare(item, epoch)`` (decoding and
    transforms, in the loader workers). Training deals each rank and worker whole batches
    (equal counts per rank, the rest left out); evaluation deals single samples (each rank
    N / world size of them, the last rank also the fewer than world size left over)."""

    def __init__(self, split: ShardSplit, prepare: Callable[[dict, int], Any], *, train: bool,
                 seed: int, env: _DistributedEnv, cache_dir: Optional[str] = None,
                 max_cache_size: Optional[str] = None):
        self.train = train
        # shuffle=False here: a subset is then the first samples stored (the same
        # whatever the run seed); the training order is shuffled below
        super().__init__(split.location, cache_dir=cache_dir, shuffle=False, seed=seed,
                         subsample=(len(split) + 0.5) / split.meta["samples"]
                         if len(split) < split.meta["samples"] else 1.0,
                         max_cache_size=max_cache_size, item_shuffle_window=0)
        # LitData memory-maps local chunks with whole chunks per worker, trimmed to the
        # shortest worker when dropping: ranks could get unequal batch counts. Off, local
        # directories are split by sample intervals as object storage is.
        self.posix_fast = None
        self.distributed_env = env
        self.set_shuffle(train)
        self.set_drop_last(train)
        self.prepare = prepare

    def set_batch_size(self, batch_size: int) -> None:
        super().set_batch_size(batch_size if self.train else 1)  # (the unit LitData deals)

    def batch_count(self, num_workers: int, batch_size: int) -> int:
        """This rank's evaluation batches: every worker ends with its own partial batch."""
        workers = max(1, num_workers)
        self.get_len(num_workers, 1)  # (makes LitData's shuffler)
        _, intervals = self.shuffler.get_chunks_and_intervals_per_workers(
            self.distributed_env, workers, 1, self.current_epoch)
        start = self.distributed_env.global_rank * workers
        return sum(math.ceil(sum(end - begin for _, begin, end, _ in worker) / batch_size)
                   for worker in intervals[start:start + workers])

    def __getitem__(self, index):
        return self.prepare(super().__getitem__(index), self.current_epoch - 1)


class EvaluationLoader(StreamingDataLoader):
    """Its length is the batches it gives (LitData's counts full batches only)."""

    def __len__(self) -> int:
        return self.dataset.batch_count(self.num_workers, self.batch_size)


class ImageItems:
    """A stored image item as (image, label[, index]): decoded, then transformed (seeded per
    sample when the transform is random). Undecodable images: None when ``bad_files`` (the
    batch leaves them out, noted there), else a BadImageError."""

    def __init__(self, transform, split: ShardSplit, run_seed: int, random_transform: bool,
                 with_index: bool, bad_files: Optional[str]):
        self.transform = transform
        self.location = split.location
        self.source = split.meta.get("source", {}).get("root", "")  # errors name its files
        self.run_seed = run_seed
        self.random_transform = random_transform
        self.with_index = with_index
        self.bad_files = bad_files

    def __call__(self, item: dict, epoch: int):
        index = item["index"]
        try:
            image = decode_bytes(item["image"], f"'{os.path.join(self.source, item['path'])}'"
                                                f" (sample {index} of {self.location})")
        except BadImageError as error:
            if self.bad_files is None:
                raise
            note_bad_file(self.bad_files, error.path)
            return None
        image = seeded(self.transform, image, sample_seed(self.run_seed, epoch, index)) if \
            self.random_transform else self.transform(image)
        label = torch.tensor(item["label"], dtype=torch.long)
        return (image, label, index) if self.with_index else (image, label)


class TrainingLoader(StreamingDataLoader):
    """The training loader: its passes are the trainer's epochs (``epoch()``: the shuffle
    order and the augmentation seeds follow them, whichever loader object or process runs
    the epoch), and a resumed run's first pass leaves out the batches ``resume_at[0]`` that
    the interrupted epoch trained (Lightning's count, which the in-memory path also uses)."""

    def __init__(self, *args, epoch: Callable[[], Optional[int]], resume_at: list[int],
                 **kwargs):
        super().__init__(*args, **kwargs)
        self._trainer_epoch = epoch
        self._resume_at = resume_at  # shared with the data module

    def __iter__(self):
        # (a generator: this runs at the epoch's first batch, after any checkpoint loaded)
        batches, self._resume_at[0] = self._resume_at[0], 0
        epoch = self._trainer_epoch()
        if epoch is not None and 0 < batches < len(self):
            self._start_within(epoch, batches)
        elif epoch is not None:
            self.restore, self.current_epoch = False, epoch  # (LitData counts from 1: +1)
        yield from super().__iter__()

    def _start_within(self, epoch: int, batches: int) -> None:
        """LitData's state after ``batches`` batches of (0-based) ``epoch``: each of its
        workers replays its share of them, round robin, and leaves them out."""
        yielded = batches * self.batch_size
        self.dataset.reset_state_dict()
        self.dataset.current_epoch = epoch + 1
        self.load_state_dict({
            "dataset": self.dataset.state_dict(yielded, self.num_workers, self.batch_size),
            "current_epoch": epoch + 1, "num_samples_yielded": yielded,
            "latest_worker_idx": (batches - 1) % max(1, self.num_workers)})


class StreamingSplits:
    """Splits and loaders over shards, for a data module that says how a stored item becomes
    a sample (:meth:`items`); stands in for ClassificationData's split machinery."""

    cfg: Any

    def __init__(self, cfg, *, splits: dict[str, ShardSplit], **kwargs):
        super().__init__(cfg, **kwargs)
        self._splits = splits
        self._resume_at = [0]  # batches the next training epoch leaves out (a resumed run)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train is None:
            self.train, self.val, self.test = (self._splits[name] for name in SPLITS)

    def resume_within_epoch(self, batches: int, epoch: Optional[int] = None) -> None:
        """The next training epoch starts ``batches`` in (a resumed run; the epoch is the
        trainer's by then). Also applies to a loader made already."""
        self._resume_at[0] = batches

    def items(self, split: ShardSplit, train: bool) -> Callable[[dict, int], Any]:
        raise NotImplementedError

    def dataset(self, split: ShardSplit, train: bool, env: Optional[_DistributedEnv] = None
                ) -> ShardDataset:
        return ShardDataset(split, self.items(split, train), train=train,
                            seed=torch.initial_seed() % 2**32, env=env or distributed_env(),
                            cache_dir=self.cfg.get("cache_dir"),
                            max_cache_size=self.cfg.get("max_cache_size"))

    def first_samples(self, size: int, train: bool = False) -> list:
        """The first ``size`` samples of the training split as written (evaluation's
        transform unless ``train``), read in this process."""
        dataset = self.dataset(self.train, train, _DistributedEnv(1, 0, 1))
        samples = [dataset[index] for index in range(min(size, len(self.train)))]
        return [sample for sample in samples if sample is not None]

    def loader(self, split: ShardSplit, train: bool,
               env: Optional[_DistributedEnv] = None) -> StreamingDataLoader:
        """The loader of this process's share of ``split`` (``env``: another place among the
        DDP ranks than this process's)."""
        batch_size = self.cfg.batch_size if train else (
            self.cfg.eval_batch_size or self.cfg.batch_size)
        env = env or distributed_env()
        if train and env.world_size > 1 and len(split) < env.world_size * batch_size:
            raise ConfigError(f"{len(split)} training samples cannot give each of "
                              f"{env.world_size} processes a batch of data.batch_size="
                              f"{batch_size}: lower data.batch_size")
        workers = loader_workers(self.cfg.num_workers)
        options = dict(
            batch_size=batch_size, num_workers=workers, shuffle=train,
            drop_last=train and (env.world_size > 1 or len(split) > batch_size),
            collate_fn=self.collate or default_collate, pin_memory=self._on_gpu(),
            # making an iterator draws a seed: not from the global RNG (base.py)
            generator=torch.Generator().manual_seed(torch.initial_seed() % 2**63))
        # New worker processes every epoch, not persistent ones: each copies the loader's
        # epoch, which a persistent worker would only learn by finishing its stream. Forked
        # (DDP ranks of the elastic launcher default to spawn: every worker of every epoch
        # would import torch again, 15 s on 2 shared cores).
        if workers and "fork" in multiprocessing.get_all_start_methods():
            options["multiprocessing_context"] = "fork"
        dataset = self.dataset(split, train, env)
        if not train:
            return EvaluationLoader(dataset, **options)
        return TrainingLoader(dataset, epoch=self._trainer_epoch, resume_at=self._resume_at,
                              **options)

    def _trainer_epoch(self) -> Optional[int]:
        trainer = getattr(self, "trainer", None)  # None outside a fit (tests)
        return None if trainer is None else trainer.current_epoch

    def train_dataloader(self) -> StreamingDataLoader:
        return self.loader(self.train, train=True)

    def val_dataloader(self) -> StreamingDataLoader:
        return self.loader(self.val, train=False)

    def test_dataloader(self) -> StreamingDataLoader:
        return self.loader(self.test, train=False)


class StreamingImageData(StreamingSplits, ImageClassificationData):
    """Images from shards, with ImageClassificationData's transforms (normalisation, the
    data set's augmentation and preprocessing hooks)."""

    def __init__(self, cfg, *, splits: dict[str, ShardSplit], **image_options):
        names = splits["train"].meta["class_names"]
        super().__init__(cfg, splits=splits, num_classes=len(names), class_names=names,
                         load=None, **image_options)

    @property
    def no_output_cache_reason(self) -> Optional[str]:
        # stored indices are stable; a subset's do not fit a cache of its length
        return "a data.train_subset of shards" if self.cfg.train_subset else None

    @property
    def info(self) -> DataInfo:
        return DataInfo(num_classes=self.num_classes, in_chans=3, image_size=self.cfg.image_size,
                        class_names=self.class_names)

    def items(self, split: ShardSplit, train: bool) -> ImageItems:
        transform = self.train_transform() if train else self.eval_transform()
        return ImageItems(transform, split, torch.initial_seed() % 2**63,
                          random_transform=train and not self.deterministic_train_transform,
                          with_index=train and self.train_with_index,
                          bad_files=self._bad_files)

    def example_batch(self, size: int = 2, full_length: bool = False) -> torch.Tensor:
        return torch.stack([image for image, *_ in self.first_samples(size)])


class TextItems:
    """A stored text item as (token ids, label[, index]), tokenised in the loader worker as
    TextClassificationData tokenises its splits (a pair with token types: 2 x L, the ids over
    their types)."""

    def __init__(self, tokenizer, max_length: int, pairs: bool, with_index: bool):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pairs = pairs
        self.with_index = with_index

    def __call__(self, item: dict, epoch: int):
        ids, = encode(self.tokenizer, [item["text"]],
                      [item["text_pair"]] if self.pairs else None, max_length=self.max_length)
        label = torch.tensor(item["label"], dtype=torch.long)
        return (ids, label, item["index"]) if self.with_index else (ids, label)


class StreamingTextData(StreamingSplits, TextClassificationData):
    """Texts from shards, tokenised with ``data.tokenizer`` in the loader workers and padded
    per batch (TextClassificationData's collate)."""

    def __init__(self, cfg, *, splits: dict[str, ShardSplit]):
        meta = splits["train"].meta
        super().__init__(cfg, splits=splits, num_classes=len(meta["class_names"]),
                         sentences=None, fingerprint=None, class_names=meta["class_names"],
                         pairs=bool(meta.get("pairs")))

    def items(self, split: ShardSplit, train: bool) -> TextItems:
        return TextItems(self.tokenizer, self.cfg.max_length, self.pairs,
                         with_index=train and self.train_with_index)

    def first_items(self, size: int) -> list[tuple]:
        """(TextClassificationData.example_batch's source) the first samples stored."""
        return [(ids, label) for ids, label, *_ in self.first_samples(size)]
