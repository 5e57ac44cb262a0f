"""Text classification: sentences tokenised once with the (teacher's) tokenizer, cached on
disk, batched with dynamic padding. A text data set (an entry of ``lepton_exp.data.sets``:
``sst2``, ``synthetic_text``) only says where its sentences come from.

Batches are ``({input_ids, attention_mask}, labels[, indices])``: the models' adapter
(lepton_exp.models.taps) feeds the dict to transformers models.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from lepton_exp.data.base import ClassificationData, DataInfo
from lepton_exp.data.tokenizers import load_tokenizer
from lepton_exp.digest import short_hash
from lepton_exp.errors import one_line
from lepton_exp.tracking.record import atomic_file

log = logging.getLogger(__name__)


@dataclass
class TextSplit:
    # per sentence (no padding): a 1-D tensor of token ids; a sentence pair's, where the
    # tokenizer gives token types: 2 x L, the ids over their token types (0 first, 1 second)
    input_ids: list[torch.Tensor]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices) -> "TextSplit":
        return TextSplit([self.input_ids[int(i)] for i in indices],
                         self.labels[torch.as_tensor(np.asarray(indices), dtype=torch.long)])


class TextDataset(Dataset):
    def __init__(self, split: TextSplit, with_index: bool = False):
        self.split = split
        self.with_index = with_index

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        item = (self.split.input_ids[index], self.split.labels[index])
        return (*item, index) if self.with_index else item


def pad_batch(items: list, pad_id: int) -> tuple:
    """Dynamic padding: every batch as long as its longest sentence (pairs with token
    types: also ``token_type_ids``, padded with 0)."""
    ids = [item[0] for item in items]
    length = max(seq.shape[-1] for seq in ids)
    input_ids = torch.full((len(ids), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), length), dtype=torch.long)
    token_types = torch.zeros((len(ids), length), dtype=torch.long) if ids[0].ndim == 2 else None
    for row, seq in enumerate(ids):
        size = seq.shape[-1]
        input_ids[row, :size] = seq[0] if token_types is not None else seq
        attention_mask[row, :size] = 1
        if token_types is not None:
            token_types[row, :size] = seq[1]
    labels = torch.stack([torch.as_tensor(item[1]) for item in items])
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_types is not None:
        inputs["token_type_ids"] = token_types
    if len(items[0]) > 2:
        return inputs, labels, torch.as_tensor([item[2] for item in items])
    return inputs, labels


class TextClassificationData(ClassificationData):
    """A data set gives its class count and, as functions of ``cfg``: ``sentences`` (split
    name: train, and val/test when it has them -> (texts, labels), or (texts, pairs, labels)
    for sentence pairs, which ``pairs=True`` announces), ``fingerprint`` (what identifies
    the raw data: file sizes and times, generator settings; part of the cache key) and
    optionally ``tokenizer`` (default: ``data.tokenizer`` loaded by name)."""

    # Per-sample teacher outputs vary in length with dynamic padding: not cached.
    no_output_cache_reason = "variable-length text"

    def __init__(self, cfg, *, num_classes: int,
                 sentences: Callable[[Any], dict[str, tuple[list[str], list[int]]]],
                 fingerprint: Callable[[Any], str],
                 tokenizer: Optional[Callable[[Any], Any]] = None,
                 class_names: Sequence[str] = (), pairs: bool = False,
                 metrics: Sequence[str] = (), regression: bool = False):
        super().__init__(cfg)
        self.pairs = pairs
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.metrics = tuple(metrics)  # DataInfo.metrics (GLUE: the task's)
        self.regression = regression  # float labels (GLUE STS-B)
        self.label_dtype = torch.float32 if regression else torch.long
        self._sentences = sentences
        self._fingerprint = fingerprint
        self._make_tokenizer = tokenizer or _named_tokenizer
        self._tokenizer = None

    def input_description(self) -> dict[str, Any]:
        # the tokenizer by name here; a deployment folder carries its files instead
        tokenizer = getattr(self.cfg, "tokenizer", None)
        return {**super().input_description(), "max_length": self.info.max_length,
                "tokenizer": str(tokenizer) if tokenizer else None}

    # -- tokenisation, cached ----------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self._make_tokenizer(self.cfg)
        return self._tokenizer

    def _tokenized(self) -> dict[str, TextSplit]:
        tokenizer = self.tokenizer
        key_material = {"source": self._fingerprint(self.cfg), "max_length": self.cfg.max_length,
                        "tokenizer": _tokenizer_fingerprint(tokenizer), "format": 2}
        if self.pairs:  # (single sentences keep the keys they had before pairs existed)
            key_material["pairs"] = True
        key = short_hash(json.dumps(key_material, sort_keys=True), 16)
        cache = Path(self.cfg.cache_dir).expanduser() / "tokenized" / f"{self.cfg.name}-{key}.pt"
        if cache.is_file():
            stored = _read_cache(cache)
            if stored is not None:
                return stored
        splits = {}
        for name, (texts, *pairs, labels) in self._sentences(self.cfg).items():
            splits[name] = TextSplit(encode(tokenizer, texts, *pairs,
                                            max_length=self.cfg.max_length),
                                     torch.tensor(labels, dtype=self.label_dtype))
        _write_cache(cache, splits)
        return splits

    def load(self):
        splits = self._tokenized()
        train, val = splits["train"], splits.get("val")
        # test, and further test splits named test_<name> (GLUE MNLI: test_mismatched)
        tests = {name: split for name, split in splits.items() if name.startswith("test")}
        return ((train, val) if val is not None else train), tests or None

    # -- what models and losses see ----------------------------------------------------------
    @property
    def info(self) -> DataInfo:
        self.setup()
        return DataInfo(num_classes=self.num_classes, vocab_size=len(self.tokenizer),
                        max_length=self.cfg.max_length, class_names=self.class_names,
                        metrics=self.metrics, regression=self.regression,
                        extra_tests=tuple(self.extra_tests))

    def collate(self, items: list) -> tuple:
        return pad_batch(items, self.tokenizer.pad_token_id or 0)

    def dataset(self, split: TextSplit, train: bool) -> Dataset:
        return TextDataset(split, with_index=train and self.train_with_index)

    def example_batch(self, size: int = 2, full_length: bool = False) -> dict[str, torch.Tensor]:
        """The first training sentences; ``full_length``: padded to ``data.max_length`` real
        tokens (the sentence repeated), the input that latency is measured at."""
        items = self.first_items(size)
        if full_length:
            length = self.cfg.max_length
            items = [(torch.cat([ids] * (length // ids.shape[-1] + 1), -1)[..., :length],
                      label) for ids, label in items]
        return self.collate(items)[0]


    def first_items(self, size: int) -> list[tuple]:
        """The first ``size`` training samples, (token ids, label)."""
        dataset = TextDataset(self.train)
        return [dataset[index] for index in range(min(size, len(dataset)))]


def encode(tokenizer, texts: list[str], pairs: list[str] | None = None, *,
           max_length: int) -> list[torch.Tensor]:
    """Token ids of each text (and its pair: then 2 x L, the ids over their token types)."""
    encoded = tokenizer(texts, *([pairs] if pairs is not None else []), truncation=True,
                        max_length=max_length)
    rows = encoded["input_ids"]
    if pairs is not None and encoded.get("token_type_ids") is not None:
        rows = [[ids, kinds] for ids, kinds in zip(rows, encoded["token_type_ids"], strict=True)]
    return [torch.tensor(row, dtype=torch.int32) for row in rows]


def _named_tokenizer(cfg):
    return load_tokenizer(cfg.tokenizer, "data.tokenizer")


def _tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's full definition (vocabulary, normalisation, templates), so
    a different tokenizer under the same name never reuses cached token ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(
        [getattr(tokenizer, "name_or_path", ""), sorted(tokenizer.get_vocab().items())])
    return short_hash(text, 64)  # all of SHA-256's digits, as the existing cache keys have


def _read_cache(cache: Path) -> dict[str, TextSplit] | None:
    """The tokenised splits stored in ``cache``, or None (with a warning) when the file is
    damaged (truncated by a crash or a full disk, or not a cache at all): it is rebuilt."""
    try:
        stored = torch.load(cache, weights_only=True)
        splits = {name: TextSplit(list(ids), labels) for name, (ids, labels) in stored.items()}
        if "train" not in splits or any(
                not isinstance(split.labels, torch.Tensor) or split.labels.ndim != 1
                or len(split.input_ids) != len(split.labels)
                or not all(isinstance(ids, torch.Tensor) for ids in split.input_ids)
                for split in splits.values()):
            raise ValueError("unexpected contents")
    except Exception as error:  # noqa: BLE001 - any damage means: rebuild it
        log.warning("tokenised-text cache %s is damaged (%s): rebuilding it", cache,
                    one_line(error).split(". ")[0][:160])
        return None
    return splits


def _write_cache(cache: Path, splits: dict[str, TextSplit]) -> None:
    """Store ``splits`` atomically: a parallel job reads a complete file or none. A cache
    that cannot be written (read-only or full disk) only costs tokenising again next time."""
    try:
        with atomic_file(cache, "wb") as handle:
            torch.save({name: (split.input_ids, split.labels) for name, split in splits.items()},
                       handle)
    except OSError as error:
        log.warning("cannot write the tokenised-text cache %s (%s): continuing without it",
                    cache, one_line(error)[:160])
