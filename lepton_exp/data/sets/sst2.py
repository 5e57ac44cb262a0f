"""GLUE SST-2 (binary sentiment). ``data.root`` holds train.tsv / dev.tsv / test.tsv
(``../shared/data/sst2``: test.tsv is GLUE's labelled dev set, the one papers report); dev.tsv
is the validation split. With only GLUE's train.tsv + dev.tsv, dev becomes the test split and
validation is carved from train. ``data.download=true`` fetches it with Hugging Face
``datasets``."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from lepton_exp.config.checks import text_data_checks
from lepton_exp.config.schemas import TextDataConfig
from lepton_exp.errors import ConfigError, one_line

FILES = {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv"}
# What to do about a bad SST-2 file, at the end of every message about one.
_TSV_FIX = ("point data.root at GLUE SST-2's TSV files (header 'sentence<TAB>label', labels "
            "0/1), or re-download them")
_LABELS = "SST-2 labels are 0 (negative) and 1 (positive)"


@dataclass
class Schema(TextDataConfig):
    """The text options (TextDataConfig) as they are: SST-2 adds none."""


def check(cfg):
    yield from text_data_checks(cfg)


def build(cfg):
    from lepton_exp.data.text import TextClassificationData

    return TextClassificationData(cfg, num_classes=2, sentences=sentences,
                                  fingerprint=fingerprint, class_names=("negative", "positive"))


def sentences(cfg) -> dict[str, tuple[list[str], list[int]]]:
    return {name: _read_tsv(path) for name, path in _files(cfg).items()}


def fingerprint(cfg) -> str:
    return json.dumps({name: [str(path.resolve()), path.stat().st_size,
                              path.stat().st_mtime_ns]
                       for name, path in _files(cfg).items()}, sort_keys=True)


def _files(cfg) -> dict[str, Path]:
    if not cfg.root:
        raise ConfigError("data.root is not set: give the directory of the SST-2 TSV files")
    root = Path(cfg.root).expanduser()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"data.root='{root}' is a file, not a directory: point data.root "
                          "at the directory holding train.tsv (+ dev.tsv, test.tsv)")
    found = {name: root / file for name, file in FILES.items() if (root / file).is_file()}
    if "train" not in found:
        if cfg.download:
            return _download(root)
        raise ConfigError(f"sst2 not found in '{root}': set data.root to a directory with "
                          "train.tsv (+ dev.tsv, test.tsv), or add data.download=true")
    if "test" not in found:  # train + dev only: GLUE's dev set is the test split
        if "val" not in found:
            raise ConfigError(f"sst2 in '{root}' has train.tsv but no labelled test split: "
                              "add test.tsv (or dev.tsv, GLUE's labelled dev set)")
        found["test"] = found.pop("val")
    return found


def _download(root: Path) -> dict[str, Path]:
    try:
        from datasets import load_dataset

        glue = load_dataset("glue", "sst2")
    except Exception as error:  # noqa: BLE001 - no package, no network
        raise ConfigError(f"cannot download SST-2 ({one_line(error)[:160]}): install "
                          "`datasets` and go online, or point data.root at the TSV files"
                          ) from error
    root.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", "train"), ("test", "validation")):
        with (root / FILES[name]).open("w", encoding="utf-8") as handle:
            handle.write("sentence\tlabel\n")
            for row in glue[split]:
                handle.write(f"{row['sentence'].strip()}\t{row['label']}\n")
    return {"train": root / "train.tsv", "test": root / "test.tsv"}


def _read_tsv(path: Path) -> tuple[list[str], list[int]]:
    """(sentences, labels) of a GLUE SST-2 TSV file: a ``sentence<TAB>label`` header, then
    one sentence and its 0/1 label per line, no quoting. Blank lines are skipped; anything
    else that does not fit is a one-line ConfigError naming the file (and line)."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter="\t",
                        quoting=csv.QUOTE_NONE)
    texts, labels = [], []
    try:
        text_column, label_column = _columns(path, [cell.strip() for cell in next(reader)])
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
                                  f"remove that line; {_LABELS}") from None
            if label not in (0, 1):
                raise ConfigError(f"{where} (label {label}): fix or remove that line; {_LABELS}")
            texts.append(row[text_column])
            labels.append(label)
    except csv.Error as error:  # e.g. a binary file: a "line" longer than csv's field limit
        raise ConfigError(f"{path}:{reader.line_num} is not a TSV line "
                          f"({one_line(error)[:100]}): {_TSV_FIX}") from error
    if not texts:
        raise ConfigError(f"{path} has a header but no sentences: {_TSV_FIX}")
    return texts, labels


def _read_text(path: Path) -> str:
    """The file as text (UTF-8, a leading BOM dropped), or a ConfigError that says why not."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {path} ({one_line(error)[:160]}): check that it is a "
                          f"readable file, or {_TSV_FIX}") from error
    if not raw.strip():
        raise ConfigError(f"{path} is empty: {_TSV_FIX}")
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")  # a BOM from a spreadsheet export
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ConfigError(f"{path}:{line} is not UTF-8 text (byte 0x{raw[error.start]:02x} at "
                          f"offset {error.start}): re-save the file as UTF-8, or {_TSV_FIX}"
                          ) from error


def _columns(path: Path, header: list[str]) -> tuple[int, int]:
    """(sentence column, label column) of the header line."""
    if "sentence" not in header or "label" not in header:
        shown = "<TAB>".join(header)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        hint = (" (GLUE's own test.tsv has no labels: use its dev.tsv as test.tsv)"
                if "index" in header else "")
        raise ConfigError(f"{path} does not start with the header 'sentence<TAB>label' "
                          f"(its first line is '{shown}'){hint}: add that header line, "
                          f"or {_TSV_FIX}")
    return header.index("sentence"), header.index("label")
