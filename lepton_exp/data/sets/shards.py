"""Images streamed from shards (LitData): data larger than a node's disk or memory.

``data.root`` holds ``train/``, ``val/`` and ``test/`` shard directories written by
``python -m lepton_exp.data.shards write --from image_folder --root <folder> --out <dir>``
(the splits data=image_folder makes of that folder), locally or at an ``s3://`` / ``gs://``
URL (chunks are cached under ``data.cache_dir``). The transforms are image_folder's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from lepton_exp.config.checks import check_range
from lepton_exp.config.schemas import not_result
from lepton_exp.data.sets import image_folder


@dataclass
class Schema(image_folder.Schema):
    # (val_size, test_size, split_seed: the writer's --val-size, --test-size, --split-seed)
    cache_dir: Optional[str] = not_result(None)  # chunks streamed from a URL are kept here
    max_cache_size: Optional[str] = not_result(None)  # e.g. 200GB; None: LitData's default


def check(cfg):
    yield from image_folder.check(cfg)
    yield check_range("data.train_subset", cfg.data.train_subset, 1)


def build(cfg):
    from lepton_exp.data.streaming import StreamingImageData, shard_splits

    return StreamingImageData(cfg, splits=shard_splits(cfg, "image"), mean=image_folder.MEAN,
                              std=image_folder.STD, augmentation=image_folder.augmentation,
                              preprocess=image_folder.preprocess)


def data_identity(cfg) -> str:
    """What the teacher cache keys shards (of either kind) by: each split's shards (their
    index's digest, written with them), read from our JSON only."""
    from lepton_exp.data.streaming import shard_splits

    return "-".join(f"{name}:{split.meta['shards_digest']}"
                    for name, split in shard_splits(cfg).items())
