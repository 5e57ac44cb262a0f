"""Raw labels of a text table's rows -> class ids (or numbers), checked against the
training split's: the label half of :mod:`lepton_exp.data.tables`.

Labels that are all integers are class ids as given (class names their str(), unless
named); otherwise they are class names, with ids in sorted order or in the order of the
class names given. A val / test label the training split does not have is an error, as
are empty and mixed (integer and name) labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from lepton_exp.errors import ConfigError

_INTEGER = re.compile(r"[+-]?\d+")
_SHOWN = 12  # names listed in a message


@dataclass
class TextTable:
    """(texts, pairs or None, labels) per split (train, and val / test where read), and what
    class id i means (() for regression labels, which are floats)."""

    splits: dict[str, tuple[list[str], Optional[list[str]], list]]
    class_names: tuple[str, ...]

    def sentences(self) -> dict[str, tuple]:
        """The splits as ``TextClassificationData``'s ``sentences`` gives them: (texts,
        labels), or (texts, pairs, labels) for sentence pairs."""
        return {name: (texts, labels) if pairs is None else (texts, pairs, labels)
                for name, (texts, pairs, labels) in self.splits.items()}


@dataclass
class Rows:
    """One split as read: its cells (labels raw), and how messages name its rows."""

    source: str  # the file, or the Hub split
    texts: Optional[list]
    pairs: Optional[list]
    labels: list
    numbers: list[int]  # each row's line (text files) or row number
    unit: str = "line"

    def where(self, index: int) -> str:
        number = self.numbers[index]
        return f"{self.source}:{number}" if self.unit == "line" else (
            f"{self.source} row {number}")


def table_error(message: str, hint: str) -> ConfigError:
    return ConfigError(f"{message}; {hint}" if hint else message)


def shown(names: Sequence[Any]) -> str:
    names = [str(name) for name in names]
    return ", ".join(names[:_SHOWN]) + (f", ... ({len(names)} in all)"
                                        if len(names) > _SHOWN else "")


class Labeller:
    """Raw labels -> class ids (or numbers), checked against the training split's."""

    def __init__(self, rows: Mapping[str, Rows], class_names: Sequence[str], keys: bool,
                 hint: str):
        self.rows, self.given, self.keys, self.hint = dict(rows), tuple(class_names), keys, hint
        self.train = self.rows["train"]
        for name, split in self.rows.items():
            if split.unit != "line" and split.labels and not any(
                    value is not None for value in split.labels):  # a Hub split unlabelled
                raise table_error(f"{split.source} has no labels (many Hub data sets publish "
                                  f"none for their test split): set data.{name}_split=null "
                                  "to hold that split out of train instead", hint)
            if not split.labels:
                raise table_error(f"{split.source} has no rows: give a table with a row per "
                                  "example", hint)
            split.labels = [None if value is None else str(value).strip()
                            for value in split.labels]
            missing = next((i for i, value in enumerate(split.labels) if not value), None)
            if missing is not None:
                raise table_error(f"{split.where(missing)} has no label (its label cell is "
                                  f"empty): fix or remove that {split.unit}", hint)

    def table(self, regression: bool) -> TextTable:
        if regression:
            labels = {name: self._numbers(split) for name, split in self.rows.items()}
            names: tuple[str, ...] = ()
        else:
            labels, names = self._class_ids()
        return TextTable({name: (split.texts, split.pairs, labels[name])
                          for name, split in self.rows.items()}, names)

    def _numbers(self, split: Rows) -> list[float]:
        numbers = []
        for index, value in enumerate(split.labels):
            try:
                numbers.append(float(value))
            except ValueError:
                raise table_error(f"{split.where(index)} has label {value!r}, which is not a "
                                  f"number: fix or remove that {split.unit}", self.hint) from None
        return numbers

    def _class_ids(self) -> tuple[dict[str, list[int]], tuple[str, ...]]:
        values = self.train.labels
        named = bool(self.given) and set(values) <= set(self.given)
        named = named or not self._integers(values)
        if named:
            names = self.given or tuple(sorted(set(values)))
        else:
            top = max(int(value) for value in values)
            names = self.given or tuple(str(i) for i in range(max(top, 0) + 1))
        ids = {key: index for index, key in enumerate(
            names if named else (str(i) for i in range(len(names))))}
        # val / test labels: the classes given, else those the training split has
        seen = ids if self.given else {
            key: ids[key] for key in (_key(value, named) for value in values) if key in ids}
        return {name: self._ids(split, ids if split is self.train else seen, named, names)
                for name, split in self.rows.items()}, names

    def _integers(self, values: list[str]) -> bool:
        """Whether the training labels are integers (ConfigError when they are mixed)."""
        integer = bool(_INTEGER.fullmatch(values[0]))
        for index, value in enumerate(values):
            if bool(_INTEGER.fullmatch(value)) != integer:
                train = self.train
                raise table_error(
                    f"{train.where(index)} has label {value!r}, "
                    f"{'not an integer like' if integer else 'an integer among names like'}"
                    f" the label {values[0]!r} of {train.where(0)}: fix or remove that "
                    f"{train.unit} (labels are all class ids 0, 1, ... or all class names)",
                    self.hint)
        return integer

    def _ids(self, split: Rows, known: dict[str, int], named: bool,
             names: tuple[str, ...]) -> list[int]:
        ids = []
        for index, value in enumerate(split.labels):
            key = _key(value, named)
            if key not in known:
                raise self._unknown(split, index, value, named, names, known)
            ids.append(known[key])
        return ids

    def _unknown(self, split: Rows, index: int, value: str, named: bool,
                 names: tuple[str, ...], known: dict[str, int]) -> ConfigError:
        if self.given and named:
            expected = f"one of the classes ({shown(names)})"
            extra = " (or add it to data.class_names)" if self.keys else ""
        elif self.given:
            ids = ", ".join(f"{i} = {name}" for i, name in enumerate(names[:_SHOWN]))
            expected, extra = f"a class id 0 .. {len(names) - 1} ({ids})", ""
        elif split is self.train:
            expected, extra = "a class id (0, 1, ...)", ""
        else:
            expected = (f"a label of the training file {self.train.source} "
                        f"({shown(sorted(known, key=known.get))})")
            extra = ""
        return table_error(f"{split.where(index)} has label {value!r}, which is not {expected}: "
                           f"fix or remove that {split.unit}{extra}", self.hint)


def _key(label: str, named: bool) -> str:
    """A label as a key of the class ids: the name, or the integer written plainly."""
    if named:
        return label
    return str(int(label)) if _INTEGER.fullmatch(label) else ""
