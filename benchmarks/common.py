"""What every benchmark section shares: machine facts, interleaved timing, running the
`lepton-exp` command as a user would, reading run records, and the Section it returns."""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"


@dataclass
class Target:
    """One target of the issue: what was measured against what was asked."""

    name: str
    measured: str
    wanted: str
    met: bool


@dataclass
class Section:
    """A part of BENCHMARKS.md: its markdown body (figures + the command that made them)
    and the targets it checked."""

    key: str
    title: str
    body: str
    targets: list[Target] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Options:
    scale: str  # full | smoke (minutes, for checking the scripts themselves)
    data_dir: Path
    work_dir: Path  # run directories, caches, throwaway venvs: everything not committed

    @property
    def smoke(self) -> bool:
        return self.scale == "smoke"


# ------------------------------------------------------------------------- machine
def machine_info(state: tuple[str, bool] | None = None) -> dict[str, str]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("torch", "pytorch_lightning", "timm", "transformers"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = "-"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "torch threads": str(torch.get_num_threads()),
            "gpu": "none" if not torch.cuda.is_available() else torch.cuda.get_device_name(0),
            "python": platform.python_version(), **versions, "commit": git_commit(state)}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout


def _dirty() -> bool:
    return bool(_git("status", "--porcelain", "--", "lepton_exp", "conf", "benchmarks").strip())


def commit_state() -> tuple[str, bool]:
    """(HEAD's hash, whether the code has uncommitted changes): git asked once, for a
    section's report line and its provenance entry alike."""
    return _git("rev-parse", "HEAD").strip() or "unknown", _dirty()


def git_commit(state: tuple[str, bool] | None = None) -> str:
    """The commit, as the report prints it."""
    commit, dirty = state or commit_state()
    return commit[:10] + (" (uncommitted changes)" if dirty else "")


def provenance_commit(state: tuple[str, bool] | None = None) -> str:
    """The commit, as results/provenance.json keeps it (``+dirty``: uncommitted code)."""
    commit, dirty = state or commit_state()
    return commit + ("+dirty" if dirty else "")


# -------------------------------------------------------------------------- timing
def interleaved(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Each variant returns a measured figure (e.g. seconds); variants run in turns, their
    order rotated every repeat, so slow drifts of the machine hit all of them alike."""
    names = list(variants)
    results: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(variants[name]())
    return results


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def mean_std(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    """`52.30 ± 0.41` (accuracies in %); the std is the sample std (n-1)."""
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


# ---------------------------------------------------------------- the user's command
def command_text(overrides: list[str]) -> str:
    return "lepton-exp " + " ".join(shlex.quote(o) for o in overrides)


def run_cli(overrides: list[str], options: Options, log_name: str,
            env: dict[str, str] | None = None) -> float:
    """Runs `lepton-exp <overrides>` in a child process (data and outputs under the
    benchmark's directories, W&B offline), returns its wall time; a failure raises with
    the end of its log."""
    options.work_dir.mkdir(parents=True, exist_ok=True)
    log = options.work_dir / "logs" / f"{log_name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    child_env = {key: value for key, value in os.environ.items()
                 if not key.startswith("WANDB_SERVICE")}
    child_env.update(LEPTON_DATA_DIR=str(options.data_dir),
                     LEPTON_OUTPUT_DIR=str(options.work_dir / "outputs"),
                     WANDB_MODE="offline", **(env or {}))
    started = time.perf_counter()
    with log.open("w") as out:
        out.write(f"$ {command_text(overrides)}\n")
        out.flush()
        result = subprocess.run([sys.executable, "-m", "lepton_exp", *overrides,
                                 "trainer.enable_progress_bar=false"],
                                cwd=REPO, env=child_env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if result.returncode:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"{command_text(overrides)} failed (exit {result.returncode}); "
                           f"log {log}:\n{tail}")
    return seconds


# Every run record ``records`` handed to the section that is running (``run_section``): a
# section reuses the finished runs of its work dir, whatever commit made them.
_records_read: list[dict] = []


def records(directory: Path) -> list[dict]:
    """The completed run records (summary.json) under `directory`, in path order."""
    found = []
    for path in sorted(directory.rglob("summary.json")):
        if any(part.startswith("replaced-") for part in path.relative_to(directory).parts):
            continue  # an earlier attempt that a run of another config set aside
        record = json.loads(path.read_text())
        if record.get("status") == "completed":
            record["_path"] = str(path.parent)
            found.append(record)
    _records_read.extend(found)
    return found


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(" ---: " if i else " --- " for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------ running sections
def parse_options(argv: list[str] | None = None, description: str = "") -> tuple[Options, list]:
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--scale", choices=("full", "smoke"), default="full",
                        help="smoke: minutes, to check the scripts (figures meaningless)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="holds cifar10/ and sst2/ (default: ../shared/data)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="runs, caches, venvs (default: outputs/benchmarks/<scale>)")
    parser.add_argument("--only", nargs="*", default=None, help="section keys to (re)run")
    args = parser.parse_args(argv)
    work_dir = args.work_dir or REPO / "outputs" / "benchmarks" / args.scale
    return Options(args.scale, args.data_dir.resolve(), work_dir.resolve()), args.only


def sections_dir(options: Options) -> Path:
    """Where sections keep their results: full scale in the repo (results/benchmarks/, so
    a report can be assembled from sections run in different sessions, each with its commit);
    smoke runs in the work dir (their figures mean nothing)."""
    return options.work_dir / "sections" if options.smoke else REPO / "results" / "benchmarks"


def made_at_commit(state: tuple[str, bool], runs: list[dict]) -> str:
    """The commit that computed a section's figures: the oldest of the runs it read (a
    finished run is reused, whatever commit made it), else this one; ``+dirty`` when
    either was uncommitted code."""
    head = provenance_commit(state)
    if not runs:
        return head
    from lepton_exp.results.provenance import runs_commit

    made = runs_commit(runs)
    dirty = made.endswith("+dirty") or head.endswith("+dirty")
    return made.removesuffix("+dirty") + ("+dirty" if dirty else "")


# A section's figures depend on the training code and the benchmarks' shared scripts, plus its
# own script and what that script names in its EXTRA_CODE (deploy: the export code).
SECTION_CODE = ("benchmarks/common.py", "benchmarks/cifar_setup.py")


def run_section(run: Callable[[Options], Section], options: Options) -> Section:
    """Runs one section and keeps its result (<key>.json in ``sections_dir``), so the
    report can be rebuilt from sections run at different times; a full-scale section's
    commit and command go into results/provenance.json (``benchmark_<key>``)."""
    from lepton_exp.results import provenance

    started = time.perf_counter()
    _records_read.clear()
    section = run(options)
    section.seconds = round(time.perf_counter() - started, 1)
    saved = sections_dir(options) / f"{section.key}.json"
    saved.parent.mkdir(parents=True, exist_ok=True)
    state = commit_state()
    machine = machine_info(state)
    made_at = made_at_commit(state, _records_read)
    payload = {**section.__dict__, "targets": [t.__dict__ for t in section.targets],
               "date": time.strftime("%Y-%m-%d %H:%M"), "commit": machine["commit"],
               **({"runs_made_at": made_at} if made_at != provenance_commit(state) else {}),
               "machine": machine}
    saved.write_text(json.dumps(payload, indent=1) + "\n")
    if not options.smoke:
        module = sys.modules.get(run.__module__)
        script = f"benchmarks/{run.__module__.rsplit('.', 1)[-1]}.py"
        provenance.record(REPO / "results", f"benchmark_{section.key}",
                          [f"benchmarks/{section.key}.json"],
                          f"python -m benchmarks --only {section.key} (then the report: "
                          "python -m benchmarks --only)", made_at,
                          code=(*provenance.TRAINING_CODE, *SECTION_CODE, script,
                                *getattr(module, "EXTRA_CODE", ())))
    return section


def main_for(run: Callable[[Options], Section]) -> None:
    """`python -m benchmarks.<section> --scale smoke|full`: one section, printed."""
    options, _ = parse_options(description=(run.__module__ or "").rsplit(".", 1)[-1])
    section = run_section(run, options)
    print(f"## {section.title}\n\n{section.body}\n\n({section.seconds:.0f} s)")


def table_section_body(intro: str, headers: list[str], rows: list[list[str]],
                       notes: list[str], missing: list[str], command: str) -> str:
    """A section of runs measured in a table: what was measured, the table, notes, the
    runs not there (another section trains them), and the command."""
    return (intro + "\n\n" + markdown_table(headers, rows) + "\n\n" + "\n".join(notes)
            + (f"\n\nNot run (train them first): {', '.join(missing)}." if missing else "")
            + f"\n\nCommand: {command}")

