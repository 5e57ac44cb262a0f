"""Text classification: sentences tokenised once with the (teacher's) tokenizer, cached on
disk, batched with dynamic padding. ``sst2`` reads GLUE SST-2 TSV files from ``data.root``
(or Hugging Face ``datasets`` with ``data.download=true``); ``synthetic_text`` generates
sentences and a word-level tokenizer, for tests.

Batches are ``({input_ids, attention_mask}, labels[, indices])``: the models' adapter
(lepton_exp.models.taps) feeds the dict to transformers models.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lepton_exp.config import ConfigError, one_line
from lepton_exp.data.base import ClassificationData, DataInfo
from lepton_exp.tracking.record import atomic_file

log = logging.getLogger(__name__)


@dataclass
class TextSplit:
    input_ids: list[torch.Tensor]  # one 1-D tensor of token ids per sentence (no padding)
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
    """Dynamic padding: every batch as long as its longest sentence."""
    ids = [item[0] for item in items]
    length = max(len(seq) for seq in ids)
    input_ids = torch.full((len(ids), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), length), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, :len(seq)] = seq
        attention_mask[row, :len(seq)] = 1
    labels = torch.stack([torch.as_tensor(item[1]) for item in items])
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if len(items[0]) > 2:
        return inputs, labels, torch.as_tensor([item[2] for item in items])
    return inputs, labels


class TextClassificationData(ClassificationData):
    # Per-sample teacher outputs vary in length with dynamic padding: not cached.
    no_output_cache_reason = "variable-length text"

    def __init__(self, cfg):
        super().__init__(cfg)
        self._tokenizer = None

    # -- to implement ----------------------------------------------------------------------
    def sentences(self) -> dict[str, tuple[list[str], list[int]]]:
        """Split name (train, and val/test when the data set has them) -> (texts, labels)."""
        raise NotImplementedError

    def build_tokenizer(self):
        from lepton_exp.models.text import load_tokenizer

        return load_tokenizer(self.cfg.tokenizer, "data.tokenizer")

    def source_fingerprint(self) -> str:
        """What identifies the raw data (file sizes and times, generator settings)."""
        raise NotImplementedError

    # -- tokenisation, cached ----------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self.build_tokenizer()
        return self._tokenizer

    def _tokenized(self) -> dict[str, TextSplit]:
        tokenizer = self.tokenizer
        key_material = {"source": self.source_fingerprint(), "max_length": self.cfg.max_length,
                        "tokenizer": _tokenizer_fingerprint(tokenizer), "format": 2}
        key = hashlib.sha256(json.dumps(key_material, sort_keys=True).encode()).hexdigest()[:16]
        cache = Path(self.cfg.cache_dir).expanduser() / "tokenized" / f"{self.cfg.name}-{key}.pt"
        if cache.is_file():
            stored = _read_cache(cache)
            if stored is not None:
                return stored
        splits = {}
        for name, (texts, labels) in self.sentences().items():
            encoded = tokenizer(texts, truncation=True, max_length=self.cfg.max_length)
            splits[name] = TextSplit([torch.tensor(ids, dtype=torch.int32)
                                      for ids in encoded["input_ids"]],
                                     torch.tensor(labels, dtype=torch.long))
        _write_cache(cache, splits)
        return splits

    def load(self):
        splits = self._tokenized()
        train, val, test = splits["train"], splits.get("val"), splits.get("test")
        return ((train, val) if val is not None else train), test

    # -- what models and losses see ----------------------------------------------------------
    @property
    def info(self) -> DataInfo:
        self.setup()
        return DataInfo(num_classes=self.num_classes, vocab_size=len(self.tokenizer),
                        max_length=self.cfg.max_length)

    def collate(self, items: list) -> tuple:
        return pad_batch(items, self.tokenizer.pad_token_id or 0)

    def dataset(self, split: TextSplit, train: bool) -> Dataset:
        return TextDataset(split, with_index=train and self.train_with_index)

    def example_batch(self, size: int = 2, full_length: bool = False) -> dict[str, torch.Tensor]:
        """The first training sentences; ``full_length``: padded to ``data.max_length`` real
        tokens (the sentence repeated), the input that latency is measured at."""
        dataset = TextDataset(self.train)
        items = [dataset[index] for index in range(min(size, len(dataset)))]
        if full_length:
            length = self.cfg.max_length
            items = [(ids.repeat(length // len(ids) + 1)[:length], label)
                     for ids, label in items]
        return self.collate(items)[0]


def _tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's full definition (vocabulary, normalisation, templates), so
    a different tokenizer under the same name never reuses cached token ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(
        [getattr(tokenizer, "name_or_path", ""), sorted(tokenizer.get_vocab().items())])
    return hashlib.sha256(text.encode()).hexdigest()


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


# What to do about a bad SST-2 file, at the end of every message about one.
_TSV_FIX = ("point data.root at GLUE SST-2's TSV files (header 'sentence<TAB>label', labels "
            "0/1), or re-download them")


def _read_tsv(path: Path) -> tuple[list[str], list[int]]:
    """(sentences, labels) of a GLUE SST-2 TSV file: a ``sentence<TAB>label`` header, then
    one sentence and its 0/1 label per line, no quoting. Blank lines are skipped; anything
    else that does not fit is a one-line ConfigError naming the file (and line)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {path} ({one_line(error)[:160]}): check that it is a "
                          f"readable file, or {_TSV_FIX}") from error
    if not raw.strip():
        raise ConfigError(f"{path} is empty: {_TSV_FIX}")
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")  # a BOM from a spreadsheet export
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ConfigError(f"{path}:{line} is not UTF-8 text (byte 0x{raw[error.start]:02x} at "
                          f"offset {error.start}): re-save the file as UTF-8, or {_TSV_FIX}"
                          ) from error
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t",
                        quoting=csv.QUOTE_NONE)
    texts, labels = [], []
    try:
        header = [cell.strip() for cell in next(reader)]
        if "sentence" not in header or "label" not in header:
            shown = "<TAB>".join(header)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            hint = (" (GLUE's own test.tsv has no labels: use its dev.tsv as test.tsv)"
                    if "index" in header else "")
            raise ConfigError(f"{path} does not start with the header 'sentence<TAB>label' "
                              f"(its first line is '{shown}'){hint}: add that header line, "
                              f"or {_TSV_FIX}")
        text_column, label_column = header.index("sentence"), header.index("label")
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            where = f"{path}:{reader.line_num} is not 'sentence<TAB>0|1'"
            if len(row) <= max(text_column, label_column):
                raise ConfigError(f"{where} (it has {len(row)} column"
                                  f"{'s' if len(row) != 1 else ''}): fix or remove that line")
            value = row[label_column].strip()
            try:
                label = int(value)
            except ValueError:
                raise ConfigError(f"{where} (label {value[:20]!r} is not an integer): fix or "
                                  "remove that line; SST-2 labels are 0 (negative) and 1 "
                                  "(positive)") from None
            if label not in (0, 1):
                raise ConfigError(f"{where} (label {label}): fix or remove that line; SST-2 "
                                  "labels are 0 (negative) and 1 (positive)")
            texts.append(row[text_column])
            labels.append(label)
    except csv.Error as error:  # e.g. a binary file: a "line" longer than csv's field limit
        raise ConfigError(f"{path}:{reader.line_num} is not a TSV line "
                          f"({one_line(error)[:100]}): {_TSV_FIX}") from error
    if not texts:
        raise ConfigError(f"{path} has a header but no sentences: {_TSV_FIX}")
    return texts, labels


class Sst2Data(TextClassificationData):
    """GLUE SST-2. ``data.root`` holds train.tsv / dev.tsv / test.tsv (``../shared/data/sst2``:
    test.tsv is GLUE's labelled dev set, the one papers report); dev.tsv is the validation
    split. With only GLUE's train.tsv + dev.tsv, dev becomes the test split and validation
    is carved from train."""

    num_classes = 2
    FILES = {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv"}

    def _files(self) -> dict[str, Path]:
        if not self.cfg.root:
            raise ConfigError("data.root is not set: give the directory of the SST-2 TSV files")
        root = Path(self.cfg.root).expanduser()
        if root.exists() and not root.is_dir():
            raise ConfigError(f"data.root='{root}' is a file, not a directory: point data.root "
                              "at the directory holding train.tsv (+ dev.tsv, test.tsv)")
        found = {name: root / file for name, file in self.FILES.items()
                 if (root / file).is_file()}
        if "train" not in found:
            if self.cfg.download:
                return self._download(root)
            raise ConfigError(f"sst2 not found in '{root}': set data.root to a directory with "
                              "train.tsv (+ dev.tsv, test.tsv), or add data.download=true")
        if "test" not in found:  # train + dev only: GLUE's dev set is the test split
            if "val" not in found:
                raise ConfigError(f"sst2 in '{root}' has train.tsv but no labelled test split: "
                                  "add test.tsv (or dev.tsv, GLUE's labelled dev set)")
            found["test"] = found.pop("val")
        return found

    def _download(self, root: Path) -> dict[str, Path]:
        try:
            from datasets import load_dataset

            glue = load_dataset("glue", "sst2")
        except Exception as error:  # noqa: BLE001 - no package, no network
            raise ConfigError(f"cannot download SST-2 ({one_line(error)[:160]}): install "
                              "`datasets` and go online, or point data.root at the TSV files"
                              ) from error
        root.mkdir(parents=True, exist_ok=True)
        for name, split in (("train", "train"), ("test", "validation")):
            with (root / self.FILES[name]).open("w", encoding="utf-8") as handle:
                handle.write("sentence\tlabel\n")
                for row in glue[split]:
                    handle.write(f"{row['sentence'].strip()}\t{row['label']}\n")
        return {"train": root / "train.tsv", "test": root / "test.tsv"}

    def source_fingerprint(self) -> str:
        return json.dumps({name: [str(path.resolve()), path.stat().st_size,
                                  path.stat().st_mtime_ns]
                           for name, path in self._files().items()}, sort_keys=True)

    def sentences(self) -> dict[str, tuple[list[str], list[int]]]:
        return {name: _read_tsv(path) for name, path in self._files().items()}


class SyntheticTextData(TextClassificationData):
    """Generated sentences: filler words plus class words (``pos3``, ``neg0``, ...), the
    label being the class whose words appear most. A word-level tokenizer over exactly this
    vocabulary is built in memory, so nothing is read or downloaded."""

    FILLER = 40

    def __init__(self, cfg):
        super().__init__(cfg)
        self.num_classes = cfg.num_classes

    def _vocabulary(self) -> list[str]:
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        classes = [f"c{label}w{k}" for label in range(self.cfg.num_classes) for k in range(4)]
        return specials + classes + [f"w{k}" for k in range(self.FILLER)]

    def build_tokenizer(self):
        from tokenizers import Tokenizer, models, pre_tokenizers, processors
        from transformers import PreTrainedTokenizerFast

        vocab = {word: index for index, word in enumerate(self._vocabulary())}
        backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]",
                                       unk_token="[UNK]", cls_token="[CLS]",
                                       sep_token="[SEP]", mask_token="[MASK]",
                                       name_or_path="synthetic-word-level")

    def source_fingerprint(self) -> str:
        return json.dumps({k: self.cfg[k] for k in ("num_samples", "num_classes", "split_seed",
                                                    "min_words", "max_words")})

    def sentences(self) -> dict[str, tuple[list[str], list[int]]]:
        cfg = self.cfg
        rng = np.random.default_rng(cfg.split_seed)
        texts, labels = [], []
        for index in range(cfg.num_samples):
            label = index % cfg.num_classes
            length = int(rng.integers(cfg.min_words, cfg.max_words + 1))
            words = [f"w{k}" for k in rng.integers(0, self.FILLER, length)]
            for position in rng.choice(length, size=min(3, length), replace=False):
                words[position] = f"c{label}w{rng.integers(0, 4)}"
            texts.append(" ".join(words))
            labels.append(label)
        return {"train": (texts, labels)}

