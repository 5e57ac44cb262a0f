"""Text tables read with Hugging Face ``datasets``: local CSV / TSV / JSON lines / Parquet
files (:func:`read_files`) or a Hub data set (:func:`read_hub`), as a :class:`TextTable`:
(texts, second texts of sentence pairs, labels) per split, and the class names.

:class:`Columns` says which column holds what: a name, or a 0-based position (the only way
to address the columns of a file without a header row). Labels are class ids (integers, as
given), class names (strings: ids in sorted order, or in the order of ``class_names``) or
numbers (``regression``). Every problem is one ConfigError that names the file and the line
(text files) or row, and what to change.

Delimited files: the delimiter comes from the suffix (.csv ',', .tsv/.txt tab) unless given.
Tab-separated files take quotes literally (pandas' ``quoting=3``: GLUE's TSVs have
unbalanced quotes); other delimiters use CSV quoting. Every cell is read as a string and
blank lines are skipped; a line number is the row's (no cell spans lines).
"""

from __future__ import annotations

import contextlib
import csv
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

from lepton_exp.data.labels import Labeller, Rows, TextTable, shown, table_error
from lepton_exp.errors import ConfigError, did_you_mean, one_line

Column = Union[str, int]
# datasets' builder by suffix (compressed files by the suffix before .gz & co.)
BUILDERS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".json": "json", ".jsonl": "json",
            ".parquet": "parquet"}
DELIMITERS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")


@dataclass(frozen=True)
class Columns:
    """Which columns hold what: names, or 0-based positions."""

    text: Column
    label: Column
    pair: Optional[Column] = None  # the second text of sentence pairs
    header: bool = True  # delimited files: the first line names the columns
    delimiter: Optional[str] = None  # delimited files: None = by the suffix


def read_files(files: Mapping[str, Union[str, Path]], columns: Columns, *,
               cache_dir: Union[str, Path], class_names: Sequence[str] = (),
               regression: bool = False, with_texts: bool = True, keys: bool = True,
               hint: str = "") -> TextTable:
    """The table of ``files`` (split name -> path: ``train``, optionally ``val``, ``test``).

    ``cache_dir``: where ``datasets`` keeps its Arrow copies. ``class_names``: the classes
    in id order (labels that are names: fixes the order and may add classes; integer
    labels: names them). ``with_texts=False``: labels and class names only (cheap).
    ``keys``: messages suggest the ``data.*`` column keys (False where the columns are
    fixed). ``hint``: appended to every message (what a preset's user should do)."""
    reader = _Reader(columns, cache_dir, keys, hint)
    rows = {name: reader.file(Path(path).expanduser(), with_texts)
            for name, path in files.items()}
    return Labeller(rows, class_names, keys, hint).table(regression)


def read_hub(hub_id: str, config: Optional[str], splits: Mapping[str, Optional[str]],
             columns: Columns, *, cache_dir: Union[str, Path], class_names: Sequence[str] = (),
             regression: bool = False, with_texts: bool = True, keys: bool = True,
             hint: str = "") -> TextTable:
    """The table of Hub data set ``hub_id`` (``config``: its configuration or None);
    ``splits``: our split name (train, val, test) -> the data set's, None or absent there:
    not read (held out of train instead). Class names: ``class_names``, else a ClassLabel
    label column's. Other arguments as for :func:`read_files`."""
    loaded = _hub(hub_id, config, cache_dir, hint)
    reader = _Reader(columns, cache_dir, keys, hint)
    if splits.get("train") not in loaded:
        raise table_error(f"the Hub data set {hub_id} has no split '{splits.get('train')}' "
                          f"(its splits: {', '.join(loaded)}): set data.train_split to one of "
                          "them", hint)
    rows = {name: reader.dataset(loaded[split], f"{hub_id} split '{split}'", with_texts)
            for name, split in splits.items() if split is not None and split in loaded}
    label = reader.resolve(list(loaded[splits["train"]].column_names), "data.label_column",
                           columns.label, rows["train"].source, delimited=False)
    names = getattr(loaded[splits["train"]].features[label], "names", None)
    return Labeller(rows, class_names or names or (), keys, hint).table(regression)


def file_builder(path: Path, delimiter: Optional[str] = None) -> tuple[Optional[str], str]:
    """(the ``datasets`` builder of ``path`` or None when its suffix is unknown, the suffix
    that decides it); a delimiter makes any file a delimited one."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSION:
        suffixes.pop()
    suffix = suffixes[-1] if suffixes else ""
    return BUILDERS.get(suffix, "csv" if delimiter else None), suffix


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars or error logs from ``datasets`` (its failures become our messages);
    pandas' note that a row has more cells than the header is an error, not a dropped cell."""
    import datasets
    from pandas.errors import ParserWarning

    bars = datasets.are_progress_bars_disabled()
    verbosity = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ParserWarning)
            yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if not bars:
            datasets.enable_progress_bars()


def _hub(hub_id: str, config: Optional[str], cache_dir, hint: str):
    import datasets

    name = hub_id + (f" ({config})" if config else "")
    try:
        with _quiet():
            return datasets.load_dataset(hub_id, config, cache_dir=str(cache_dir))
    except Exception as error:  # noqa: BLE001 - offline, unknown id, no such config
        raise table_error(f"cannot load the Hub data set {name} ({one_line(error)[:200]}): check "
                          "data.hub_id and data.hub_config and go online (HF_HUB_OFFLINE unset), "
                          "or read local files with data.train_file", hint) from error


class _Reader:
    """Files and Hub splits -> :class:`Rows`, for one :class:`Columns`."""

    def __init__(self, columns: Columns, cache_dir, keys: bool, hint: str):
        self.columns, self.cache_dir, self.keys, self.hint = columns, str(cache_dir), keys, hint

    def file(self, path: Path, with_texts: bool) -> Rows:
        builder, suffix = file_builder(path, self.columns.delimiter)
        if builder is None:
            raise table_error(f"{path}: cannot tell the format from the suffix '{suffix}': name it "
                              f"{', '.join(BUILDERS)}" + (", or set data.delimiter for a delimited "
                                                          "text file" if self.keys else ""),
                              self.hint)
        if not path.is_file():
            raise table_error(f"{path} does not exist or is not a file: give the path of the "
                              "table", self.hint)
        if path.stat().st_size == 0:
            raise table_error(f"{path} is empty: give a table with a row per example", self.hint)
        delimited = builder == "csv"
        options = self._delimited(path, suffix) if delimited else {}
        try:
            with _quiet():
                dataset = _load(builder, path, options, self.cache_dir)
        except Exception as error:  # noqa: BLE001 - any parse failure: the file is at fault
            raise self._read_error(path, builder, error) from error
        header = delimited and self.columns.header
        rows = self.dataset(dataset, str(path), with_texts, delimited=delimited,
                            first=2 if header else 1)
        if not rows.labels:
            raise table_error(f"{path} has {'a header but ' if header else ''}no rows: give a "
                              "table with a row per example", self.hint)
        return rows

    def _delimited(self, path: Path, suffix: str) -> dict[str, Any]:
        """load_dataset's options for a delimited file: every column a string column."""
        from datasets import Features, Value

        delimiter = self.columns.delimiter or DELIMITERS[suffix]
        read = dict(sep=delimiter, header=0 if self.columns.header else None, index_col=False,
                    quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL,
                    na_filter=False, skip_blank_lines=False, encoding="utf-8")
        try:  # the column names (or count) first: the cells' types are set per column
            import pandas as pd

            with _quiet():
                first = pd.read_csv(path, nrows=1, dtype=str, **read)
        except Exception as error:  # noqa: BLE001
            raise self._read_error(path, "csv", error) from error
        if first.empty:  # (datasets cannot make a data set of no rows)
            raise table_error(f"{path} has a header but no rows: give a table with a row per "
                              "example", self.hint)
        names = [str(name) for name in first.columns]
        options = dict(read, features=Features({name: Value("string") for name in names}))
        if not self.columns.header:
            options["column_names"] = names
        return options

    def _read_error(self, path: Path, builder: str, error: Exception) -> ConfigError:
        """Why ``path`` cannot be read: empty, not UTF-8, or the parser's reason."""
        cause: Any = error
        while cause.__cause__ is not None:
            cause = cause.__cause__
        try:
            raw = path.read_bytes() if builder != "parquet" else b"x"
        except OSError as problem:
            return table_error(f"cannot read {path} ({one_line(problem)[:160]}): check that it "
                               "is a readable file", self.hint)
        if not raw.strip():
            return table_error(f"{path} is empty: give a table with a row per example", self.hint)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            line = raw.count(b"\n", 0, bad.start) + 1
            return table_error(f"{path}:{line} is not UTF-8 text (byte 0x{raw[bad.start]:02x} at "
                               f"offset {bad.start}): re-save the file as UTF-8", self.hint)
        kind = {"csv": "delimited text", "json": "JSON lines", "parquet": "Parquet"}[builder]
        if isinstance(cause, Warning):  # pandas' ParserWarning, made an error by _quiet
            cause = "the first row has more cells than the header has names"
        fix = ("check its delimiter and header (data.delimiter, data.header)"
               if builder == "csv" and self.keys else "check its format")
        return table_error(f"cannot read {path} as {kind} ({one_line(cause)[:200]}): {fix}",
                           self.hint)

    def dataset(self, dataset, source: str, with_texts: bool, delimited: bool = False,
                first: int = 1) -> Rows:
        """The columns' cells of a loaded ``datasets.Dataset``; blank lines of a delimited
        file are dropped."""
        names = list(dataset.column_names)
        columns = self.columns
        wanted = {"data.text_column": columns.text, "data.text_pair_column": columns.pair,
                  "data.label_column": columns.label}
        wanted = {key: column for key, column in wanted.items() if column is not None and (
            with_texts or key == "data.label_column")}
        found = {key: self.resolve(names, key, column, source, delimited)
                 for key, column in wanted.items()}
        cells = {key: dataset.data.column(name).to_pylist() for key, name in found.items()}
        label = found["data.label_column"]
        class_label = getattr(dataset.features[label], "names", None)
        if class_label:  # a ClassLabel: ids into its names (-1: unlabelled), read as names
            cells["data.label_column"] = [None if value == -1 else class_label[value]
                                          for value in cells["data.label_column"]]
        numbers = list(range(first, first + dataset.num_rows))
        if delimited:  # blank lines: every cell empty
            blank = {index for index, value in enumerate(cells["data.label_column"])
                     if not value.strip() and not any(
                         str(cell).strip() for cell in dataset[index].values())}
            if blank:
                cells = {key: [value for index, value in enumerate(values)
                               if index not in blank] for key, values in cells.items()}
                numbers = [number for index, number in enumerate(numbers)
                           if index not in blank]
        rows = Rows(source, cells.get("data.text_column"), cells.get("data.text_pair_column"),
                    cells["data.label_column"], numbers, "line" if delimited else "row")
        for key in ("data.text_column", "data.text_pair_column"):
            if key in cells:
                self._check_texts(rows, key, found[key], cells[key])
        return rows

    def resolve(self, names: list[str], key: str, wanted: Column, source: str,
                delimited: bool) -> str:
        """The name of column ``wanted`` (a name or a 0-based position) among ``names``."""
        positional = delimited and not self.columns.header
        setting = f"{key}={wanted!r}" if self.keys else f"column {wanted!r}"
        if isinstance(wanted, str) and positional:
            if not wanted.strip().isdigit():
                raise table_error(
                    f"{setting} names a column, but {source} is read without a header row "
                    f"(data.header=false), so its {len(names)} columns are addressed by "
                    f"0-based position: give {key}=0 .. {len(names) - 1}, or "
                    "data.header=true if its first line names the columns", self.hint)
            wanted = int(wanted)
        if isinstance(wanted, int) and not isinstance(wanted, bool):
            if 0 <= wanted < len(names):
                return names[wanted]
            listed = "" if positional else f": {shown(names)}"
            raise table_error(f"{setting} is out of range: {source} has {len(names)} column"
                              f"{'s' if len(names) != 1 else ''} (0 .. {len(names) - 1}{listed})"
                              + (f": give a position below {len(names)}" if self.keys else ""),
                              self.hint)
        stripped = {name.strip(): name for name in names}
        if str(wanted).strip() in stripped:
            return stripped[str(wanted).strip()]
        fix = (f": set {key} to one of them" + (
            " (or data.header=false if its first line is data: columns by position)"
            if delimited else "")) if self.keys else ""
        raise table_error(f"{source} has no column '{wanted}'{did_you_mean(str(wanted), stripped)}"
                          f" (its columns: {shown(names)}){fix}", self.hint)

    def _check_texts(self, rows: Rows, key: str, name: str, values: list) -> None:
        for index, value in enumerate(values):
            if value is not None and not isinstance(value, str):
                values[index] = str(value)
        empty = [index for index, value in enumerate(values) if not (value or "").strip()]
        if empty and len(empty) == len(values):
            raise table_error(f"{rows.source}: column '{name}' is empty in every {rows.unit}"
                              + (f": is {key} the column of the texts?" if self.keys else ""),
                              self.hint)
        if empty:
            raise table_error(f"{rows.where(empty[0])} has an empty text (column '{name}'): fix "
                              f"or remove that {rows.unit}", self.hint)


def _load(builder: str, path: Path, options: dict, cache_dir: str):
    import datasets

    return datasets.load_dataset(builder, data_files={"train": str(path)}, split="train",
                                 cache_dir=cache_dir, **options)
