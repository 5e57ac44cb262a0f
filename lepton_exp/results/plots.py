"""PNG plots of a metric against any key, one series per row group, mean ± std error bars.

X is either a setting (temperature, sparsity, model name): one line per row group through
the mean at each X value; or a measured quantity (``num_params``, ``compress/latency_ms_b1``,
any metric): a scatter with one point per table cell, at the cell's mean X and mean metric.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from lepton_exp.results.run import MEASURED_KEYS, MISSING, Run
from lepton_exp.results.table import data_runs, group_runs, is_number, show, sort_key
from lepton_exp.tracking.record import atomic_file

# Record fields that are measurements (seed, stage, name are settings).
MEASURED_FIELDS = ("num_params", "model_size_bytes", "wall_time_s")


def is_measured(runs: list[Run], key: str) -> bool:
    return any(key in run.metrics() or (key in MEASURED_FIELDS and key in run.record)
               or (key.startswith(MEASURED_KEYS) and run.lookup(key) is not MISSING)
               for run in runs)


def plot_path(out: Path, metric: str, x_key: str) -> Path:
    def safe(name: str) -> str:
        return re.sub(r"[^A-Za-z0-9._=+-]+", "_", name)

    return out.parent / f"{out.name}_{safe(metric)}_vs_{safe(x_key)}.png"


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _numbers(runs: list[Run], key: str) -> list[float]:
    return [float(v) for v in (run.get(key) for run in runs) if is_number(v)]


def _label(hue_keys: list[str], hue: tuple) -> str:
    if len(hue_keys) == 1:
        return show(hue[0])
    return ", ".join(f"{k}={show(v)}" for k, v in zip(hue_keys, hue, strict=True))


def line_series(runs: list[Run], hue_keys: list[str], x_key: str, metric: str
                ) -> dict[tuple, list[tuple[Any, float, float]]]:
    """{row group: [(x, mean, std), ...] sorted by x} over completed runs."""
    series: dict[tuple, list[tuple[Any, float, float]]] = {}
    for values, members in group_runs(data_runs(runs), [*hue_keys, x_key]).items():
        ys = _numbers(members, metric)
        if ys:
            series.setdefault(values[:-1], []).append((values[-1], *_mean_std(ys)))
    return {hue: sorted(points, key=lambda p: sort_key(p[0]))
            for hue, points in sorted(series.items(), key=lambda s: sort_key(s[0]))}


def scatter_series(runs: list[Run], hue_keys: list[str], cell_keys: list[str], x_key: str,
                   metric: str) -> dict[tuple, list[tuple[float, float, float, float]]]:
    """{row group: [(x mean, x std, metric mean, metric std) per table cell]}."""
    series: dict[tuple, list[tuple[float, float, float, float]]] = {}
    keys = [*hue_keys, *(k for k in cell_keys if k not in hue_keys)]
    for values, members in group_runs(data_runs(runs), keys).items():
        both = [run for run in members if is_number(run.get(x_key)) and is_number(run.get(metric))]
        if both:
            point = (*_mean_std(_numbers(both, x_key)), *_mean_std(_numbers(both, metric)))
            series.setdefault(values[:len(hue_keys)], []).append(point)
    return {hue: sorted(points) for hue, points in sorted(series.items(),
                                                          key=lambda s: sort_key(s[0]))}


def plot_metric(runs: list[Run], x_key: str, metric: str, hue_keys: list[str],
                cell_keys: list[str], path: Path) -> Path | None:
    """Write the plot to ``path``; None when no completed run has both values."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, no GUI

    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    axes = figure.add_subplot()
    if is_measured(runs, x_key):
        series = scatter_series(runs, hue_keys, cell_keys, x_key, metric)
        for hue, points in series.items():
            x, x_err, y, y_err = map(list, zip(*points, strict=True))
            axes.errorbar(x, y, xerr=x_err, yerr=y_err, fmt="o", capsize=3,
                          label=_label(hue_keys, hue))
    else:
        series = line_series(runs, hue_keys, x_key, metric)
        xs = sorted({p[0] for points in series.values() for p in points}, key=sort_key)
        numeric = all(is_number(x) for x in xs)
        for hue, points in series.items():
            x = [p[0] if numeric else xs.index(p[0]) for p in points]
            axes.errorbar(x, [p[1] for p in points], yerr=[p[2] for p in points], fmt="o-",
                          capsize=3, label=_label(hue_keys, hue))
        if not numeric:
            axes.set_xticks(range(len(xs)), [show(x) for x in xs])
    if not series:
        return None
    axes.set_xlabel(x_key)
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} vs {x_key} (mean ± std over runs)")
    axes.grid(True, alpha=0.3)
    if hue_keys:
        axes.legend(title=", ".join(hue_keys), fontsize="small")
    with atomic_file(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    return path
