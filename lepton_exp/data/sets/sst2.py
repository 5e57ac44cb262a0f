"""GLUE SST-2 (binary sentiment). ``data.root`` holds train.tsv / dev.tsv / test.tsv
(``../shared/data/sst2``: test.tsv is GLUE's labelled dev set, the one papers report); dev.tsv
is the validation split. With only GLUE's train.tsv + dev.tsv, dev becomes the test split and
validation is carved from train. ``data.download=true`` fetches it with Hugging Face
``datasets``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lepton_exp.config.checks import text_data_checks
from lepton_exp.config.schemas import TextDataConfig
from lepton_exp.data.tables import Columns
from lepton_exp.errors import ConfigError, one_line

FILES = {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv"}
CLASS_NAMES = ("negative", "positive")
# Read as a text table (lepton_exp.data.tables, as data=text_table reads any): tab-separated,
# a header, quotes taken literally.
COLUMNS = Columns(text="sentence", label="label", delimiter="\t")
# What to do about a bad SST-2 file, at the end of every message about one.
_TSV_FIX = ("point data.root at GLUE SST-2's TSV files (header 'sentence<TAB>label', labels "
            "0/1; GLUE's own test.tsv has no labels: use its dev.tsv as test.tsv), or "
            "re-download them")


@dataclass
class Schema(TextDataConfig):
    """The text options (TextDataConfig) as they are: SST-2 adds none."""


def check(cfg):
    yield from text_data_checks(cfg)


def build(cfg):
    from lepton_exp.data.text import TextClassificationData

    return TextClassificationData(cfg, num_classes=len(CLASS_NAMES), sentences=sentences,
                                  fingerprint=fingerprint, class_names=CLASS_NAMES)


def sentences(cfg) -> dict[str, tuple[list[str], list[int]]]:
    from lepton_exp.data.tables import read_files

    table = read_files(_files(cfg), COLUMNS, cache_dir=Path(cfg.cache_dir).expanduser() /
                       "datasets", class_names=CLASS_NAMES, keys=False, hint=_TSV_FIX)
    return table.sentences()


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
