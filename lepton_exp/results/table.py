"""Pivot completed runs into cells of ``mean ± std (n)``: rows x one column key x metrics.

Runs that share the row and column values are one cell; whatever else differs between them
is averaged over (seeds, typically). A cell that mixes runs differing in some other setting
(two models, say) is averaged all the same, with a warning naming that setting.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lepton_exp.results.run import MISSING, Run
from lepton_exp.results.sweep import normalise_value, override_values
from lepton_exp.tracking.record import atomic_file

# Settings that may differ inside a cell without making it a mix of different experiments.
_BOOKKEEPING = ("name", "tags", "paths.", "logger.", "hydra.", "trainer.enable_progress_bar",
                "data.root", "data.num_workers", "teacher.checkpoint")
# Checked in every cell even when no run overrides them (W&B runs have no overrides).
_ALWAYS_CHECKED = ("stage", "model.name", "data.name", "method", "step")
# Metrics where lower is better, for bolding the best cell of a column.
_LOWER_IS_BETTER = ("loss", "latency", "time", "bytes", "params", "macs", "size", "error")
NO_VALUE = "—"


@dataclass
class Cell:
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float | None:
        """Sample standard deviation (ddof=1); None for a single run, never a fake 0."""
        return float(np.std(self.values, ddof=1)) if self.n > 1 else None


@dataclass
class Table:
    rows: list[str]
    col: str | None
    metrics: list[str]
    cells: dict[tuple[str, tuple, Any], Cell]  # (metric, row values, column value)
    row_groups: list[tuple]
    col_values: list[Any]
    warnings: list[str] = field(default_factory=list)


def group_value(value: Any) -> Any:
    """A hashable grouping value where 4 and 4.0 are one group."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def sort_key(value: Any) -> tuple:
    """Numbers numerically, then strings alphabetically, then unset values."""
    if isinstance(value, tuple):
        return tuple(sort_key(v) for v in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    if value is None:
        return (2, 0, "")
    return (1, 0, str(value))


def show(value: Any) -> str:
    return NO_VALUE if value is None else str(value)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def data_runs(runs: list[Run]) -> list[Run]:
    """The runs a table averages: completed, and not a pipeline's own record."""
    return [run for run in runs if run.status == "completed" and not run.is_pipeline]


def one_per_computation(members: list[Run]) -> list[Run]:
    """``members`` less the sweep jobs that pointed to a run of the same settings (``same_as``)
    when that run is in the cell too: one computation counts once in a mean."""
    where = {str(run.where).rstrip("/") for run in members}
    return [run for run in members
            if str(run.record.get("same_as") or "").rstrip("/") not in where]


def group_runs(runs: list[Run], keys: list[str]) -> dict[tuple, list[Run]]:
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(group_value(run.get(k)) for k in keys), []).append(run)
    return groups


def build_table(runs: list[Run], rows: list[str], col: str | None,
                metrics: list[str]) -> Table:
    fixed = [*rows, *([col] if col else [])]
    groups = group_runs(data_runs(runs), fixed)
    cells = {}
    for values, members in groups.items():
        row, column = values[:len(rows)], values[len(rows)] if col else None
        members = one_per_computation(members)
        for metric in metrics:
            numbers = [float(v) for v in (run.get(metric) for run in members) if is_number(v)]
            if numbers:
                cells[(metric, row, column)] = Cell(numbers)
    table = Table(rows, col, metrics, cells,
                  sorted({k[1] for k in cells}, key=sort_key),
                  sorted({k[2] for k in cells}, key=sort_key))
    table.warnings = mixed_warnings(groups, fixed)
    return table


def _checked_keys(run: Run, fixed: list[str]) -> set[str]:
    keys = set(override_values(run.overrides)) | set(_ALWAYS_CHECKED)
    return {k for k in keys if k not in fixed and k.split(".")[-1] != "seed"
            and not k.startswith(_BOOKKEEPING)}


def _setting(run: Run, key: str) -> str | None:
    """How ``key`` was set for ``run``: its resolved value, or for a config group
    (``distill=kd``, whose resolved value is a whole subtree) the option chosen."""
    value = run.lookup(key)
    if isinstance(value, dict) or value is MISSING:
        value = override_values(run.overrides).get(key, "(default)")
    text = normalise_value(value)
    # File paths (checkpoints of earlier pipeline steps) differ per run by design.
    return None if "/" in text and key not in _ALWAYS_CHECKED else text


def mixed_warnings(groups: dict[tuple, list[Run]], fixed: list[str]) -> list[str]:
    """One warning per setting that differs between runs averaged into one cell."""
    mixed: dict[str, tuple[set[str], int]] = {}
    for members in groups.values():
        keys = set().union(*(_checked_keys(run, fixed) for run in members))
        for key in sorted(keys):
            settings = {_setting(run, key) for run in members} - {None}
            if len(settings) > 1:
                seen, cells = mixed.get(key, (set(), 0))
                mixed[key] = (seen | settings, cells + 1)
    return [f"{key} differs within {cells} cell(s) ({', '.join(sorted(values))}) and is "
            f"averaged over: add it to --rows or --cols to separate it"
            for key, (values, cells) in sorted(mixed.items())]


# -- rendering ------------------------------------------------------------------------------

def decimals_for(means: list[float]) -> int:
    largest = max((abs(m) for m in means if math.isfinite(m)), default=0.0)
    return 4 if largest < 10 else 2 if largest < 1000 else 0


def format_cell(cell: Cell, decimals: int) -> str:
    if cell.std is None:
        return f"{cell.mean:.{decimals}f} (n=1)"
    return f"{cell.mean:.{decimals}f} ± {cell.std:.{decimals}f} (n={cell.n})"


def lower_is_better(metric: str) -> bool:
    return any(word in metric.lower() for word in _LOWER_IS_BETTER)


def _best(cells: list[Cell | None], metric: str) -> Cell | None:
    present = [c for c in cells if c is not None and math.isfinite(c.mean)]
    if len(present) < 2:
        return None
    pick = min if lower_is_better(metric) else max
    return pick(present, key=lambda c: c.mean)


def markdown_tables(table: Table) -> str:
    """Without --cols: one table, a column per metric. With it: one table per metric."""
    if table.col is None:
        columns = [(metric, metric, None) for metric in table.metrics]
        return _markdown(table, columns)
    parts = []
    for metric in table.metrics:
        columns = [(f"{table.col}={show(v)}", metric, v) for v in table.col_values]
        parts.append(f"### {metric}\n\n{_markdown(table, columns)}")
    return "\n\n".join(parts)


def _markdown(table: Table, columns: list[tuple[str, str, Any]]) -> str:
    """``columns``: (header, metric, column value) triples."""
    grid = [[table.cells.get((metric, row, value)) for _, metric, value in columns]
            for row in table.row_groups]
    decimals = {metric: decimals_for([c.mean for (m, _, _), c in table.cells.items()
                                      if m == metric])
                for _, metric, _ in columns}
    best = [_best([line[i] for line in grid], metric)
            for i, (_, metric, _) in enumerate(columns)]
    lines = ["| " + " | ".join([*table.rows, *(h for h, _, _ in columns)]) + " |",
             "| " + " | ".join(["---"] * (len(table.rows) + len(columns))) + " |"]
    for row, line in zip(table.row_groups, grid, strict=True):
        texts = []
        for i, cell in enumerate(line):
            text = NO_VALUE if cell is None else format_cell(cell, decimals[columns[i][1]])
            texts.append(f"**{text}**" if cell is not None and cell is best[i] else text)
        lines.append("| " + " | ".join([*map(show, row), *texts]) + " |")
    return "\n".join(lines)


def csv_rows(table: Table) -> list[dict[str, Any]]:
    """Long format: one row per cell per metric."""
    out = []
    for metric in table.metrics:
        for row in table.row_groups:
            for column in (table.col_values if table.col else [None]):
                cell = table.cells.get((metric, row, column))
                if cell is None:
                    continue
                line = {key: show(value) for key, value in zip(table.rows, row, strict=True)}
                if table.col:
                    line[table.col] = show(column)
                line.update(metric=metric, mean=repr(cell.mean),
                            std="" if cell.std is None else repr(cell.std), n=cell.n)
                out.append(line)
    return out


def write_csv(table: Table, path: Path) -> Path:
    fields = [*table.rows, *([table.col] if table.col else []), "metric", "mean", "std", "n"]
    with atomic_file(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(csv_rows(table))
    return path
