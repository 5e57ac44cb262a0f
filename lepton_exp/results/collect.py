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
from pathlib import Path
from typing import Any

from lepton_exp.config.identity import flatten
from lepton_exp.results.run import MISSING, ResultsError, Run
from lepton_exp.results.wandb_runs import read_offline_run
from lepton_exp.tracking.record import RECORD_NAME


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
