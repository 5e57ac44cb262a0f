"""Which commit and command made each file of ``results/``, and which files no longer match
the code: ``results/provenance.json`` maps an entry (one command's output) to

- ``files``: the results files it wrote;
- ``command``: how to make them again;
- ``made_at``: the commit whose code computed the figures (the runs' ``git.commit``);
- ``code``: the paths (files or folders) whose code computes them;
- ``checked_at`` (optional): a later commit at which re-running part of it (``check``: the
  command and what matched) gave the same figures, so the code changes in between are known
  not to move them.

An entry is stale when a commit after ``checked_at`` (else ``made_at``) changed a path of
``code``: ``lepton-exp-results --stale`` lists those. ``tests/test_provenance.py`` fails on
them unless ``known_stale`` says, as of a commit, why the entry is not regenerated yet (the
results README shows it); a code change after that commit makes the test fail again.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Iterable

from lepton_exp.tracking.record import write_json_atomic

PROVENANCE = "provenance.json"
# What computes a training result: everything but the results tooling and the CLI's help.
TRAINING_CODE = ("lepton_exp/app", "lepton_exp/stages", "lepton_exp/training",
                 "lepton_exp/teachers", "lepton_exp/distill", "lepton_exp/prune",
                 "lepton_exp/quant", "lepton_exp/measure", "lepton_exp/models",
                 "lepton_exp/data", "conf")


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def load(results_dir: Path) -> dict[str, dict[str, Any]]:
    path = results_dir / PROVENANCE
    return json.loads(path.read_text()) if path.exists() else {}


def record(results_dir: Path, entry: str, files: list[str], command: str, made_at: str,
           code: tuple[str, ...] = TRAINING_CODE, machine: str | None = None) -> None:
    """Write (or replace) ``entry``: called by whatever writes ``files`` into ``results_dir``.
    ``machine`` says what made the figures where they depend on it (CPU kernels round
    differently: the same seed's accuracies differ between machines)."""
    entries = load(results_dir)
    entries[entry] = {"files": sorted(files), "command": command, "made_at": made_at,
                      "code": list(code), **({"machine": machine} if machine else {})}
    write_json_atomic(results_dir / PROVENANCE, dict(sorted(entries.items())))


def runs_commit(records: Iterable[dict[str, Any]]) -> str:
    """The commit whose code computed a set of runs, from their records (``summary.json``):
    the oldest run's ``git.commit`` (a sweep resumed at a later commit keeps the runs it had
    finished), ``+dirty`` when any was made from uncommitted changes or could not tell;
    ``unknown`` when one does not say which commit made it (nothing then vouches for it)."""
    states = [record.get("git") or {} for record in sorted(
        records, key=lambda record: str(record.get("started_at")))]
    if not states or not all(state.get("commit") for state in states):
        return "unknown"
    dirty = any(state.get("dirty") is not False for state in states)
    return states[0]["commit"] + ("+dirty" if dirty else "")


def changed_since(root: Path, commit: str, paths: list[str]) -> list[str]:
    """Files under ``paths`` that a commit after ``commit`` (up to HEAD) changed; the error
    text when ``commit`` is not in this clone's history."""
    base = commit.split()[0]
    if base.endswith("+dirty"):  # made from uncommitted code: nothing says what it was
        return [f"(made from uncommitted changes to {base.removesuffix('+dirty')})"]
    if _git(root, "merge-base", "--is-ancestor", base, "HEAD").returncode != 0:
        return [f"(commit {base} is not an ancestor of HEAD)"]
    diff = _git(root, "diff", "--name-only", f"{base}..HEAD", "--", *paths)
    return [line for line in diff.stdout.splitlines() if line]


def stale(root: Path, results_dir: Path | None = None) -> dict[str, list[str]]:
    """Entry -> the code files changed since its figures were made (or last checked)."""
    results_dir = results_dir or root / "results"
    found = {}
    for name, entry in load(results_dir).items():
        since = entry.get("checked_at") or entry["made_at"]
        changed = changed_since(root, since, entry["code"])
        if changed:
            found[name] = changed
    return found


def unacknowledged(root: Path, results_dir: Path | None = None) -> dict[str, list[str]]:
    """The stale entries whose ``known_stale`` is missing, or older than a change of code."""
    results_dir = results_dir or root / "results"
    entries = load(results_dir)
    found = {}
    for name, changed in stale(root, results_dir).items():
        known = entries[name].get("known_stale") or {}
        later = changed_since(root, known["at"], entries[name]["code"]) if known else changed
        if later:
            found[name] = later
    return found


def uncovered(results_dir: Path) -> list[str]:
    """Files of ``results_dir`` that no entry names (their commit and command are unknown)."""
    named = {file for entry in load(results_dir).values() for file in entry["files"]}
    files = (path.relative_to(results_dir).as_posix() for path in results_dir.rglob("*")
             if path.is_file())
    return sorted(name for name in files if name not in named
                  and name not in (PROVENANCE, "README.md"))
