"""Run records from directories: ``summary.json`` files, pipeline steps, offline W&B logs.

A :class:`Run` wraps one record and resolves any key a table or plot may ask for. When a
key could mean several things, the first of these that has it wins:

1. a metric: ``record["metrics"]`` (``test/acc``, ``compress/latency_ms_b1``);
2. a top-level record field, taken literally (``num_params``, ``wall_time_s``, ``stage``,
   ``name``, ``status``, ``seed``);
3. a dotted config key (``distill.temperature``, ``model.name``, ``prune.sparsity``);
4. a derived key: ``method`` (the sorted distillation term names joined by ``+``, or
   ``none``), ``step`` (the pipeline step name, else None), ``precision`` (``float32``, or
   ``int8`` for the int8 view of a quantized run), and the deployed model's measured
   ``size_bytes`` and ``latency_ms_b<N>`` (from the quantization or pruning measurements).

A quantized run (``quant=...``) holds two models. With ``int8_views``, it is also returned a
second time as its int8 model (``precision=int8``): ``test/*`` are then its ``test_int8/*``,
``size_bytes`` and ``latency_ms_b*`` its ``quant/*``, so one table or plot sets the float and
int8 models side by side (``--rows method,precision``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lepton_exp.config import flatten, method_label

RECORD_NAME = "summary.json"
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
DERIVED_KEYS = ("method", "step", "precision", "size_bytes", "latency_ms_b1")
MEASURED_KEYS = ("size_bytes", "latency_ms_b")  # derived measurements (prefixes)
# Top-level record fields that are bookkeeping, not something to tabulate or average.
_NOT_FIELDS = {"config", "metrics"}


class ResultsError(Exception):
    """A problem the user can fix (bad key, nothing found, W&B unreachable): one line."""


@dataclass
class Run:
    record: dict[str, Any]
    source: str  # the summary.json, .wandb file or W&B run path this came from
    step: str | None = None  # pipeline step name, for a step's record
    precision: str = "float32"  # int8: the int8 model of a quantized run

    @property
    def status(self) -> str:
        return self.record.get("status") or "running"

    @property
    def is_pipeline(self) -> bool:
        """A pipeline's own record: its steps are the data, it is only checked for failure."""
        return self.record.get("stage") == "pipeline"

    @property
    def overrides(self) -> list[str]:
        return list(self.record.get("overrides") or [])

    @property
    def where(self) -> str:
        return str(self.record.get("run_dir") or self.source)

    def metrics(self) -> dict[str, Any]:
        metrics = self.record.get("metrics") or {}
        if self.precision != "int8":
            return metrics
        # the int8 model's test metrics under the float names: one column compares both
        kept = {k: v for k, v in metrics.items()
                if not k.startswith(("test/", "test_best/", "test_int8/"))}
        return {**kept, **{f"test/{k.removeprefix('test_int8/')}": v
                           for k, v in metrics.items() if k.startswith("test_int8/")}}

    def measured(self, key: str) -> Any:
        """``size_bytes`` / ``latency_ms_b<N>`` of this run's deployed model, or MISSING."""
        metrics = self.record.get("metrics") or {}
        if self.precision == "int8":
            return metrics.get(f"quant/{key}", MISSING)
        if f"quant_float/{key}" in metrics:
            return metrics[f"quant_float/{key}"]
        if key == "size_bytes":
            return self.record.get("model_size_bytes", MISSING)
        return metrics.get(f"compress/{key}", MISSING)

    def lookup(self, key: str) -> Any:
        """The value of ``key`` (see the module docstring for the order), or MISSING."""
        metrics = self.metrics()
        if key in metrics:
            return metrics[key]
        if key in self.record and key not in _NOT_FIELDS:
            return self.record[key]
        value = config_value(self.record.get("config") or {}, key)
        if value is not MISSING:
            return value
        if key == "method":
            return method_name(self.record.get("config") or {})
        if key == "step":
            return self.step
        if key == "precision":
            return self.precision
        if key.startswith(MEASURED_KEYS):
            return self.measured(key)
        return MISSING

    def get(self, key: str, default: Any = None) -> Any:
        value = self.lookup(key)
        return default if value is MISSING else value

    def known_keys(self) -> set[str]:
        """Every key :meth:`lookup` resolves, for suggestions on a mistyped key."""
        config = self.record.get("config") or {}
        return ({*self.metrics(), *DERIVED_KEYS, *flatten(config),
                 *(k for k in self.record if k not in _NOT_FIELDS)})


def config_value(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def method_name(config: dict[str, Any]) -> str:
    """``at+kd`` for terms {kd, at}: sorted, so the same method always gets the same name."""
    terms = config_value(config, "distill.terms")
    return method_label(terms if isinstance(terms, dict) else None)


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{'a.b': 1, 'c': {'d': 2}} -> {'a': {'b': 1}, 'c': {'d': 2}} (W&B configs are flat)."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break  # a scalar and a subtree under one name: keep the scalar
        else:
            if isinstance(value, dict) and isinstance(node.get(leaf), dict):
                node[leaf].update(value)
            else:
                node[leaf] = value
    return tree


def collect_records(paths: Iterable[str | Path], offline_wandb: bool = False,
                    int8_views: bool = False) -> list[Run]:
    """Every run record under ``paths`` (sweep dirs, run dirs, parents of either, or files).

    A pipeline's steps are returned as runs with ``step`` set; the pipeline's own record is
    returned too (``is_pipeline``), for the failure report. With ``offline_wandb``, a run
    directory that has W&B offline logs but no summary.json is read from those logs.
    """
    paths = [Path(p) for p in paths]
    found: dict[Path, Run] = {}
    for path in paths:
        if not path.exists():
            raise ResultsError(f"{path} does not exist")
        files = [path] if path.is_file() else sorted(path.rglob(RECORD_NAME))
        for file in files:
            if file.suffix == ".json":
                _add(found, file)
    for run in [r for r in found.values() if r.is_pipeline]:
        _add_pipeline_steps(found, run)
    runs = list(found.values())
    if offline_wandb:
        runs += _offline_wandb_runs(paths, found)
    if int8_views:
        runs += [Run(run.record, f"{run.source} (int8)", run.step, precision="int8")
                 for run in runs if run.record.get("quant") and run.status == "completed"]
    return runs


def _add(found: dict[Path, Run], file: Path) -> Run:
    file = file.resolve()
    if file not in found:
        try:
            record = json.loads(file.read_text())
        except (OSError, ValueError) as error:  # a half-copied sweep still gives a table
            record = {"status": "failed", "run_dir": str(file.parent),
                      "error": f"unreadable {file.name}: {error}"}
        found[file] = Run(record, str(file))
    return found[file]


def _add_pipeline_steps(found: dict[Path, Run], pipeline: Run) -> None:
    """Name the steps of a pipeline. A step usually has its record in ``<pipeline>/<step>/``;
    the teacher step lives in the teacher cache (shared: read once however many pipelines
    list it), and a step whose record is gone is kept as the pipeline's short entry."""
    pipeline_dir = Path(pipeline.source).parent
    for file, run in found.items():  # also steps a killed pipeline never listed
        if file.parent.parent == pipeline_dir and run is not pipeline:
            run.step = file.parent.name
    for name, entry in (pipeline.record.get("steps") or {}).items():
        candidates = [pipeline_dir / name / RECORD_NAME]
        if isinstance(entry, dict) and entry.get("run_dir"):
            candidates.append(Path(entry["run_dir"]) / RECORD_NAME)
        file = next((c for c in candidates if c.is_file()), None)
        if file is not None:
            _add(found, file).step = name
        elif isinstance(entry, dict):
            key = (pipeline_dir / name / RECORD_NAME).resolve()
            found[key] = Run({**entry, "overrides": pipeline.overrides}, str(key), step=name)


def _offline_wandb_runs(paths: list[Path], found: dict[Path, Run]) -> list[Run]:
    from lepton_exp.results.wandb_runs import read_offline_run

    runs, seen = [], set()
    for path in paths:
        logs = [path] if path.suffix == ".wandb" else sorted(path.rglob("run-*.wandb"))
        for log in map(Path.resolve, logs):
            if log in seen:  # wandb/latest-run links to the newest run's directory
                continue
            seen.add(log)
            # <run_dir>/wandb/offline-run-<time>-<id>/run-<id>.wandb
            run_dir = log.parents[2] if log.parent.parent.name == "wandb" else log.parent
            record_file = run_dir / RECORD_NAME
            if record_file.is_file():  # the run record is authoritative; W&B is a fallback
                if record_file.resolve() not in found:
                    runs.append(_add(found, record_file))
                continue
            runs.append(Run(read_offline_run(log, run_dir), str(log)))
    return runs


def config_diff(first: dict[str, Any], second: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, first value, second value) for every flattened config key that differs."""
    a, b = flatten(first.get("config") or {}), flatten(second.get("config") or {})
    return [(key, a.get(key, MISSING), b.get(key, MISSING)) for key in sorted({*a, *b})
            if a.get(key, MISSING) != b.get(key, MISSING)]
