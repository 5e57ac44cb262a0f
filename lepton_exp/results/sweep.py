"""What a sweep should have produced, and which of its runs are missing or did not finish.

The jobs of a basic Hydra sweep are the Cartesian product of the swept values of the
command-line overrides (``hydra.overrides.task`` in ``multirun.yaml``) and of
``hydra.sweeper.params`` (the command line wins for the same key). Overrides are parsed with
Hydra's own parser, so ``a=1,2``, ``a=range(0,3)`` and ``a=choice(x,y)`` expand as Hydra does.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lepton_exp.results.run import MISSING, Run

SWEEP_CONFIG = "multirun.yaml"
NOT_FINISHED = {"failed": "failed", "interrupted": "interrupted", "running": "incomplete"}


@dataclass
class SweepGrid:
    sweep_dir: Path
    jobs: list[list[tuple[str, str]]] | None  # each job: (key, value) overrides, in order
    note: str | None = None  # why there is no grid (jobs is None)
    command: str | None = None  # the sweep's command line, from its multirun.yaml


@dataclass
class Problem:
    kind: str  # missing | failed | interrupted | incomplete
    overrides: list[str]
    where: str
    error: str | None = None


@dataclass
class Problems:
    items: list[Problem] = field(default_factory=list)
    expected: int = 0  # jobs of the sweeps that have a fixed grid
    notes: list[str] = field(default_factory=list)  # sweeps without one, and why

    def count(self, kind: str) -> int:
        return sum(p.kind == kind for p in self.items)


@functools.lru_cache(maxsize=1)
def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def normalise_value(value: Any) -> str:
    """One spelling per value, so '4', 4 and 4.0 (or 'False' and false) compare equal."""
    if isinstance(value, str):
        text = value.strip().strip("'\"")
        if text.lower() in ("true", "false"):
            return text.lower()
        if text.lower() in ("null", "~"):  # YAML null; "none" is a method name here
            return "null"
        try:
            return normalise_value(float(text))
        except ValueError:
            return text
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    if isinstance(value, (list, tuple)):
        return json.dumps([normalise_value(v) for v in value])
    if isinstance(value, dict):
        return json.dumps({str(k): normalise_value(v) for k, v in sorted(value.items())})
    return str(value)


def plain_key(key: str) -> str:
    """``+x.y`` / ``~x.y`` / ``x@pkg`` -> ``x.y`` / ``x``: the key the override sets."""
    return key.lstrip("+~").split("@", 1)[0]


def override_values(overrides: list[str]) -> dict[str, str]:
    """``["distill=kd", "+x.y=3"]`` -> ``{"distill": "kd", "x.y": "3"}`` (normalised)."""
    return dict(_parsed_overrides(tuple(overrides)))


@functools.lru_cache(maxsize=4096)  # tables ask again per cell and key; parsing costs ~1 ms
def _parsed_overrides(overrides: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    parser, values = _parser(), {}
    for text in overrides:
        try:
            override = parser.parse_override(text)
            key, value = override.key_or_group, override.get_value_element_as_str()
        except Exception:  # noqa: BLE001 - a record's override Hydra can't re-read: plain split
            key, _, value = text.partition("=")
        values[plain_key(key)] = normalise_value(value)
    return tuple(values.items())


def expected_jobs(task: list[str], params: dict[str, Any] | None = None
                  ) -> list[list[tuple[str, str]]]:
    """Every job of a basic sweep; raises ValueError for sweeps with no fixed grid
    (``interval(...)``, ``glob(...)``)."""
    by_key: dict[str, str] = {}
    for key, value in (params or {}).items():
        value = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        by_key[plain_key(key)] = f"{key}={value}"
    for text in task:
        by_key[plain_key(text.split("=", 1)[0])] = text  # the command line wins
    axes = []
    for override in _parser().parse_overrides(list(by_key.values())):
        key = override.get_key_element()
        if override.is_sweep_override():
            try:
                values = list(override.sweep_string_iterator())
            except Exception as error:  # Hydra: "can only enumerate ..."
                raise ValueError(f"{key} is swept by {override.value_type.name.lower()}, "
                                 "which has no fixed set of values") from error
        else:
            values = [override.get_value_element_as_str()]
        axes.append([(key, value) for value in values])
    return [list(job) for job in itertools.product(*axes)]


def load_grid(sweep_dir: Path) -> SweepGrid:
    import yaml  # not OmegaConf: multirun.yaml holds ${now:...} that must stay unresolved

    config = yaml.safe_load((sweep_dir / SWEEP_CONFIG).read_text()) or {}
    hydra = config.get("hydra") or {}
    sweeper = hydra.get("sweeper") or {}
    target = str(sweeper.get("_target_") or "BasicSweeper")
    if "BasicSweeper" not in target:
        return SweepGrid(sweep_dir, None, f"{target.rsplit('.', 1)[-1]} chooses its runs as it "
                                          "goes: no fixed grid, missing runs not checked")
    task = list((hydra.get("overrides") or {}).get("task") or [])
    command = sweep_command(task, list((hydra.get("overrides") or {}).get("hydra") or []))
    try:
        return SweepGrid(sweep_dir, expected_jobs(task, sweeper.get("params")), command=command)
    except ValueError as error:
        return SweepGrid(sweep_dir, None, f"{error}: missing runs not checked")
    except Exception as error:  # noqa: BLE001 - Hydra's parse errors; report, don't crash
        return SweepGrid(sweep_dir, None, f"cannot expand the sweep ({error}); "
                                          "missing runs not checked")


def sweep_command(task: list[str], hydra_overrides: list[str]) -> str:
    """``lepton-exp -m ...`` as the sweep was started (Hydra's own mode flag and the sweep
    directory lepton-exp names by itself left out)."""
    import shlex

    shown = [o for o in hydra_overrides if not o.startswith("hydra.mode=") and not (
        o.startswith("hydra.sweep.dir=${paths.output_dir}/multiruns/"))]
    return shlex.join(["lepton-exp", "-m", *shown, *task])


def find_grids(paths: list[Path]) -> list[SweepGrid]:
    """The sweeps (directories with a multirun.yaml) in or under ``paths``."""
    dirs = {file.parent.resolve() for path in map(Path, paths) if path.is_dir()
            for file in path.rglob(SWEEP_CONFIG)}
    return [load_grid(d) for d in sorted(dirs)]


def _matches(job: list[tuple[str, str]], run: Run, run_overrides: dict[str, str]) -> bool:
    for key, value in job:
        have = run_overrides.get(plain_key(key))
        if have is None:  # not on the job's command line: compare the resolved config
            config = run.lookup(plain_key(key))
            have = None if config is MISSING else normalise_value(config)
        if have != normalise_value(value):
            return False
    return True


def _is_under(run: Run, directory: Path) -> bool:
    if run.source.startswith("wandb:"):  # a W&B API run belongs to no directory
        return False
    return Path(run.source).resolve().is_relative_to(directory)


def find_problems(runs: list[Run], grids: list[SweepGrid]) -> Problems:
    """Missing jobs of every sweep grid, then every run that did not complete."""
    problems = Problems()
    for grid in grids:
        if grid.jobs is None:
            problems.notes.append(f"{grid.sweep_dir}: {grid.note}")
            continue
        problems.expected += len(grid.jobs)
        members = [(run, override_values(run.overrides)) for run in runs
                   if _is_under(run, grid.sweep_dir)]
        for job in grid.jobs:
            if not any(_matches(job, run, values) for run, values in members):
                problems.items.append(Problem("missing", [f"{k}={v}" for k, v in job],
                                              str(grid.sweep_dir)))
    for run in runs:
        if run.status in NOT_FINISHED:
            problems.items.append(Problem(NOT_FINISHED[run.status], run.overrides, run.where,
                                          _first_line(run.record.get("error"))))
    return problems


def _first_line(error: Any) -> str | None:
    if not error:
        return None
    lines = str(error).strip().splitlines()
    return lines[0] if lines else None


def run_sweep_command(command: list[str], output_dir: Path, dry_run: bool = False) -> None:
    """Print and run ``lepton-exp ...`` (``command[0]`` is the name) with the lepton-exp of
    this Python's environment, outputs under ``output_dir``; ``dry_run``: print only."""
    import os
    import shlex
    import subprocess
    import sys

    print("$", shlex.join(command), flush=True)
    if dry_run:
        return
    exe = str(Path(sys.executable).parent / "lepton-exp")
    subprocess.run([exe, *command[1:]], check=True,
                   env={**os.environ, "LEPTON_OUTPUT_DIR": str(output_dir)})
