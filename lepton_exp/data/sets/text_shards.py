"""Texts (sentences or sentence pairs) streamed from shards (LitData): tables larger than a
node's disk or memory.

``data.root`` holds ``train/``, ``val/`` and ``test/`` shard directories written by
``python -m lepton_exp.data.shards write --from text_table --file <table> --text-column <c>
--label-column <c>`` (the splits data=text_table makes of that table), locally or at an
``s3://`` / ``gs://`` URL. Sentences are tokenised with ``data.tokenizer`` (the teacher's) in
the loader workers, not once ahead as data=text_table does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from lepton_exp.config.checks import check_range, text_data_checks
from lepton_exp.config.schemas import TextDataConfig, not_result
from lepton_exp.data.sets.shards import data_identity  # noqa: F401 - the same for both kinds


@dataclass
class Schema(TextDataConfig):
    # cache_dir: chunks streamed from a URL are kept here
    max_cache_size: Optional[str] = not_result(None)  # e.g. 200GB; None: LitData's default


def check(cfg):
    yield from text_data_checks(cfg)
    yield check_range("data.train_subset", cfg.data.train_subset, 1)
    if cfg.data.download:
        yield "data.download is SST-2's (data=sst2): data=text_shards reads data.root"


def build(cfg):
    from lepton_exp.data.streaming import StreamingTextData, shard_splits

    return StreamingTextData(cfg, splits=shard_splits(cfg, kind="text"))
