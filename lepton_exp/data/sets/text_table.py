"""Any text classification table: ``data=text_table data.train_file=...``. Local CSV, TSV,
JSON lines or Parquet files (the format from the suffix), or a Hugging Face Hub data set
(``data.hub_id``, online), read with Hugging Face ``datasets`` (lepton_exp.data.tables).

Columns by name, or by 0-based position (``data.header=false``: files without a header row).
Labels: integers (class ids as given) or names (ids in sorted order, or in the order of
``data.class_names``), any number of classes. Sentence pairs: ``data.text_pair_column``.
Without ``data.val_file`` / ``data.test_file`` (Hub: without those splits) validation and
test are stratified shares of train (``data.val_size``, ``data.test_size``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional

from lepton_exp.config.checks import check_range, text_data_checks
from lepton_exp.config.schemas import TextDataConfig
from lepton_exp.data.tables import Columns, TextTable, file_builder, read_files, read_hub
from lepton_exp.errors import ConfigError

COLUMN_KEYS = ("text_column", "text_pair_column", "label_column")
FILE_KEYS = {"train": "train_file", "val": "val_file", "test": "test_file"}
# data.delimiter: the character, or these names for the ones a command line makes awkward
DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|",
                   "space": " "}


@dataclass
class Schema(TextDataConfig):
    # Local files (relative paths: to data.root when it is set, else to the working directory)
    train_file: Optional[str] = None  # .csv, .tsv, .txt (tab-separated), .jsonl/.json, .parquet
    val_file: Optional[str] = None  # None: a stratified share (data.val_size) of train
    test_file: Optional[str] = None  # None: a stratified share (data.test_size) of train
    test_size: float = 0.1  # < 1: fraction of the training file, >= 1: number of rows
    # ... or a Hugging Face Hub data set (online) and its split names (null / absent: held out)
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None
    train_split: str = "train"
    val_split: Optional[str] = "validation"
    test_split: Optional[str] = "test"
    # Columns: a name, or a 0-based position (the only way when data.header=false)
    text_column: Any = "text"
    text_pair_column: Any = None  # the second sentence of sentence pairs
    label_column: Any = "label"
    header: bool = True  # delimited files: the first line names the columns
    delimiter: Optional[str] = None  # None: .csv ',', .tsv/.txt tab; or a character / tab
    # Class names in id order: fixes the order of name labels (default: sorted) and may add
    # classes the training file lacks; names integer labels (default: their str())
    class_names: Optional[List[str]] = None


def check(cfg):
    data = cfg.data
    yield from text_data_checks(cfg)
    yield check_range("data.test_size", data.test_size, 0, low_open=True)
    yield from table_checks(data)
    if data.download:
        yield ("data.download is SST-2's (data=sst2): data=text_table reads data.train_file, "
               "or a Hub data set with data.hub_id")


def table_checks(data) -> Iterator[Optional[str]]:
    """The column and source settings: one line per problem."""
    if data.train_file and data.hub_id:  # (neither: an error when the data is built)
        yield ("data=text_table reads either local files (data.train_file=<csv|tsv|jsonl|"
               "parquet>, + data.val_file, data.test_file) or a Hub data set (data.hub_id): "
               "keep one")
    elif data.hub_id and (data.val_file or data.test_file):
        yield "data.val_file / data.test_file go with data.train_file, not data.hub_id"
    for key in COLUMN_KEYS:
        value = data[key]
        if value is None and key != "text_pair_column":
            yield f"data.{key} is not set: give the column's name or 0-based position"
        elif isinstance(value, bool) or not isinstance(value, (str, int, type(None))) or (
                isinstance(value, int) and value < 0):
            yield f"data.{key}={value} must be a column name or a 0-based position (0, 1, ...)"
        elif isinstance(value, str) and not data.header and data.train_file and not (
                value.strip().isdigit()):
            yield (f"data.{key}='{value}' names a column, but data.header=false: "
                   f"{data.train_file} has no header row, so give the column's 0-based "
                   f"position (data.{key}=0, 1, ...), or data.header=true")
    used = [data[key] for key in COLUMN_KEYS if data[key] is not None]
    if len(set(map(str, used))) < len(used):
        yield (f"data.text_column, data.text_pair_column and data.label_column must be "
               f"different columns, got {', '.join(map(str, used))}")
    if data.delimiter is not None and len(delimiter(data)) != 1:
        yield (f"data.delimiter={data.delimiter!r} must be one character (or one of "
               f"{', '.join(DELIMITER_NAMES)})")
    names = list(data.class_names or [])
    if len(set(names)) < len(names) or any(not str(name).strip() for name in names):
        yield f"data.class_names={names} must be distinct, non-empty names"


def build(cfg):
    from lepton_exp.data.text import TextClassificationData

    names = tuple(cfg.class_names or ()) or read(cfg, with_texts=False).class_names
    return TextClassificationData(cfg, num_classes=len(names), sentences=sentences,
                                  fingerprint=fingerprint, class_names=names,
                                  pairs=cfg.text_pair_column is not None)


def columns(cfg) -> Columns:
    return Columns(text=cfg.text_column, label=cfg.label_column, pair=cfg.text_pair_column,
                   header=cfg.header, delimiter=delimiter(cfg))


def delimiter(cfg) -> Optional[str]:
    value = cfg.delimiter
    return DELIMITER_NAMES.get(value.lower(), value) if isinstance(value, str) else value


def files(cfg) -> dict[str, Path]:
    """Split name -> the local file (train, and val / test where given)."""
    root = Path(cfg.root).expanduser() if cfg.root else None
    found = {}
    for split, key in FILE_KEYS.items():
        if not cfg[key]:
            continue
        path = Path(cfg[key]).expanduser()
        path = root / path if root is not None and not path.is_absolute() else path
        if not path.is_file():
            where = "is a directory" if path.is_dir() else "does not exist"
            raise ConfigError(f"data.{key}={cfg[key]}: {path.absolute()} {where}: give the "
                              "path of a .csv, .tsv, .txt, .jsonl or .parquet file")
        if file_builder(path, delimiter(cfg))[0] is None:
            raise ConfigError(f"data.{key}={cfg[key]}: cannot tell the format of {path.name} "
                              "from its suffix: name it .csv, .tsv, .txt, .jsonl, .json or "
                              ".parquet, or set data.delimiter for a delimited text file")
        found[split] = path
    if "train" not in found:
        raise ConfigError("data.train_file is not set: give the training table "
                          "(data.train_file=<csv|tsv|jsonl|parquet file>), or a Hub data set "
                          "(data.hub_id=<id>)")
    return found


def read(cfg, with_texts: bool = True) -> TextTable:
    """The table of ``cfg`` (the data section): its files, or its Hub data set."""
    options = dict(cache_dir=Path(cfg.cache_dir).expanduser() / "datasets",
                   class_names=tuple(cfg.class_names or ()), with_texts=with_texts)
    if cfg.hub_id:
        splits = {"train": cfg.train_split, "val": cfg.val_split, "test": cfg.test_split}
        return read_hub(cfg.hub_id, cfg.hub_config, splits, columns(cfg), **options)
    return read_files(files(cfg), columns(cfg), **options)


def sentences(cfg) -> dict[str, tuple]:
    return read(cfg).sentences()


def fingerprint(cfg) -> str:
    """What identifies the data without reading it: each file's resolved path, size and
    modification time (or the Hub data set and splits), and the column settings."""
    if cfg.hub_id:
        source: Any = {"hub": [cfg.hub_id, cfg.hub_config, cfg.train_split, cfg.val_split,
                               cfg.test_split]}
    else:
        source = {split: [str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns]
                  for split, path in files(cfg).items()}
    return json.dumps({"source": source, "columns": asdict(columns(cfg)),
                       "class_names": list(cfg.class_names or [])}, sort_keys=True)


# The teacher cache keys a teacher by this too: a changed file trains a new one.
data_identity = fingerprint
