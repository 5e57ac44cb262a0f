"""The Markdown report: how it was made, from what, the tables, and what is missing or failed."""

from __future__ import annotations

from pathlib import Path

from lepton_exp.results.run import Run
from lepton_exp.results.sweep import Problems
from lepton_exp.results.table import Table, data_runs, markdown_tables

PROBLEM_KINDS = ("missing", "failed", "interrupted", "incomplete")


def counts_line(runs: list[Run], problems: Problems) -> str:
    completed = len(data_runs(runs))
    parts = [f"{completed} completed run(s) in the tables"]
    if problems.expected:
        parts.append(f"{problems.expected} expected by the sweep grid(s)")
    parts += [f"{problems.count(kind)} {kind}" for kind in PROBLEM_KINDS]
    pipelines = sum(run.is_pipeline for run in runs)
    if pipelines:
        parts.append(f"{pipelines} pipeline record(s) (their steps are the rows)")
    return ", ".join(parts)


def problem_lines(problems: Problems) -> list[str]:
    """One Markdown bullet per missing or unfinished run, with what re-creates it."""
    lines = []
    for problem in sorted(problems.items, key=lambda p: PROBLEM_KINDS.index(p.kind)):
        overrides = " ".join(problem.overrides) or "(no overrides recorded)"
        error = f" — {problem.error}" if problem.error else ""
        lines.append(f"- **{problem.kind}**: `{overrides}`{error} ({problem.where})")
    return lines


def render_report(command: str, sources: list[str], runs: list[Run], table: Table,
                  problems: Problems, plots: list[Path]) -> str:
    metrics = ", ".join(table.metrics)
    parts = [f"# Results: {metrics}",
             f"Made by: `{command}`",
             "Sources:\n\n" + "\n".join(f"- {source}" for source in sources),
             (f"Runs: {counts_line(runs, problems)}. Each cell is mean ± sample std (n runs) "
              "over completed runs only; what differs between them besides the row and "
              "column keys (seeds, typically) is averaged over.")]
    parts.append(markdown_tables(table) if table.cells else
                 "No completed run has these metrics: no table.")
    if table.warnings:
        parts.append("Warnings:\n\n" + "\n".join(f"- {w}" for w in table.warnings))
    if plots:
        parts.append("Plots:\n\n" + "\n".join(f"- `{p}`" for p in plots))
    nothing = "None: no run failed" + (f", none of the {problems.expected} expected is "
                                       "missing" if problems.expected else "") + "."
    section = problem_lines(problems) or [nothing]
    section += [f"- note: {note}" for note in problems.notes]
    parts.append("## Missing or failed runs\n\n" + "\n".join(section))
    return "\n\n".join(parts) + "\n"


def write_markdown(lines: list[str], runs: list[Run], out: Path) -> Path:
    """A sweep script's report: ``lines``, then the runs that did not complete (with their
    errors), written to ``out`` with the suffix .md and printed; returns the file."""
    unfinished = [run for run in runs if run.status != "completed"]
    if unfinished:
        lines = [*lines, "", "Runs that did not complete:",
                 *(f"- `{run.where}`: {run.status} {run.record.get('error', '')}"
                   for run in unfinished)]
    path = out.with_suffix(".md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return path
