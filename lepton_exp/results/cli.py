"""``lepton-exp-results``: tables and plots from run records, with what is missing or failed.

    lepton-exp-results DIR [DIR...] [--wandb ENTITY/PROJECT [--wandb-group G]]
        [--offline-wandb] [--rows KEY[,KEY...]] [--cols KEY] [--metric M ...] [--plot X ...]
        [--out PATH] | --diff RUN_DIR RUN_DIR

Writes ``<out>.md`` (the command, sources, tables, missing/failed runs), ``<out>.csv`` (one
row per cell per metric) and ``<out>_<metric>_vs_<X>.png`` per ``--plot``. A problem the user
can fix is one line ``lepton-exp-results: error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import difflib
import json
import shlex
import sys
from pathlib import Path
from typing import NoReturn

from lepton_exp.results import provenance
from lepton_exp.results.collect import collect_records, config_diff
from lepton_exp.results.plots import plot_metric, plot_path
from lepton_exp.results.report import render_report
from lepton_exp.results.run import MISSING, ResultsError, Run
from lepton_exp.results.sweep import find_grids, find_problems
from lepton_exp.results.table import build_table, data_runs, is_number, write_csv
from lepton_exp.tracking.record import RECORD_NAME, atomic_file

PROG = "lepton-exp-results"
DEFAULT_METRIC = "test/acc"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, like every other error here
        raise ResultsError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Tables (Markdown + CSV) and plots of run "
                     "records, averaged over seeds, listing missing and failed runs.")
    parser.add_argument("dirs", nargs="*", type=Path, metavar="DIR",
                        help="sweep dirs, run dirs, or directories holding them")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read this W&B project")
    parser.add_argument("--wandb-group", metavar="G", help="only this W&B group")
    parser.add_argument("--offline-wandb", action="store_true",
                        help="read W&B offline logs of run dirs that have no summary.json")
    parser.add_argument("--rows", default="name", metavar="KEY[,KEY...]",
                        help="row keys (default: name)")
    parser.add_argument("--cols", metavar="KEY", help="column key, e.g. distill.temperature")
    parser.add_argument("--metric", action="append", dest="metrics", metavar="M",
                        help=f"metric(s) to tabulate (default: {DEFAULT_METRIC})")
    parser.add_argument("--plot", action="append", default=[], metavar="X",
                        help="plot the first metric against X (repeatable)")
    parser.add_argument("--out", type=Path, metavar="PATH",
                        help="output path without suffix (default: results/<first DIR name>)")
    parser.add_argument("--machine", metavar="TEXT",
                        help="what ran the runs, where their figures depend on it (CPU kernels "
                        "round differently): kept in results/provenance.json with the entry")
    parser.add_argument("--stale", action="store_true",
                        help="list the results/ files whose code changed since they were made"
                        " (results/provenance.json); exit 1 if any")
    parser.add_argument("--diff", nargs=2, type=Path, metavar="RUN_DIR",
                        help="print the config keys whose values differ between two runs")
    return parser


def check_keys(runs: list[Run], keys: dict[str, list[str]]) -> None:
    """Every key some run has, or an error naming the closest keys that exist."""
    known = set().union(*(run.known_keys() for run in runs))
    for option, names in keys.items():
        for key in names:
            if any(run.lookup(key) is not MISSING for run in runs):
                continue
            close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ResultsError(f"unknown key '{key}' for {option}: no run has it{hint}")


def check_metrics(runs: list[Run], metrics: list[str]) -> None:
    completed = data_runs(runs)
    for metric in metrics:
        if completed and not any(is_number(run.get(metric)) for run in completed):
            raise ResultsError(f"--metric {metric} has no numeric value in any completed run")


def default_out(args: argparse.Namespace) -> Path:
    if args.dirs:
        return Path("results") / (args.dirs[0].resolve().name or "results")
    return Path("results") / args.wandb.replace("/", "_")


def _load_record(path: Path) -> dict:
    file = path if path.is_file() else path / RECORD_NAME
    try:
        return json.loads(file.read_text())
    except OSError:
        raise ResultsError(f"no {RECORD_NAME} in {path}") from None
    except ValueError as error:
        raise ResultsError(f"{file} is not valid JSON ({error})") from None


def print_diff(first: Path, second: Path) -> None:
    differences = config_diff(_load_record(first), _load_record(second))
    print(f"config keys that differ: {first} -> {second}")
    def show(value: object) -> str:
        return "(unset)" if value is MISSING else repr(value)

    for key, a, b in differences:
        print(f"  {key}: {show(a)} -> {show(b)}")
    if not differences:
        print("  (none)")


def print_stale(root: Path | None = None) -> None:
    root = root or Path.cwd()
    found = provenance.stale(root)
    entries = provenance.load(root / "results")
    for entry, changed in found.items():
        known = entries[entry].get("known_stale")
        print(f"{entry}: stale, code changed since: {', '.join(changed[:5])}"
              + (f" (+{len(changed) - 5} more)" if len(changed) > 5 else "")
              + (f"; known since {known['at'][:10]}: {known['why']}" if known else ""))
    if found:
        raise SystemExit(1)
    print("results/: every entry of provenance.json matches the code")


def run(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    if args.stale:
        print_stale()
        return
    if args.diff:
        print_diff(*args.diff)
        return
    if not args.dirs and not args.wandb:
        raise ResultsError("give at least one run or sweep directory, or --wandb ENTITY/PROJECT")
    rows = [key.strip() for key in args.rows.split(",") if key.strip()]
    # quantized runs count twice (float and int8 model) only when the table tells them apart
    runs = collect_records(args.dirs, offline_wandb=args.offline_wandb,
                           int8_views="precision" in [*rows, args.cols])
    if args.wandb:
        from lepton_exp.results.wandb_runs import fetch_project_runs

        runs += fetch_project_runs(args.wandb, args.wandb_group)
    if not runs:
        hint = "" if args.offline_wandb else " (--offline-wandb also reads W&B offline logs)"
        raise ResultsError(f"no run records ({RECORD_NAME}) under "
                           f"{', '.join(map(str, args.dirs))}{hint}")
    metrics = args.metrics or [DEFAULT_METRIC]
    check_keys(runs, {"--rows": rows, "--cols": [args.cols] if args.cols else [],
                      "--metric": metrics, "--plot": args.plot})
    check_metrics(runs, metrics)

    grids = find_grids(args.dirs)
    problems = find_problems(runs, grids)
    table = build_table(runs, rows, args.cols, metrics)
    out = args.out or default_out(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    cell_keys = [*rows, *([args.cols] if args.cols else [])]
    plots = [path for x in args.plot if (path := plot_metric(
        runs, x, metrics[0], rows, cell_keys, plot_path(out, metrics[0], x))) is not None]
    sources = [f"`{d}`" for d in args.dirs] + [
        f"sweep `{grid.sweep_dir.name}` made by `{grid.command}`"
        for grid in grids if grid.command]
    if args.wandb:
        sources.append(f"W&B `{args.wandb}`" + (f" group `{args.wandb_group}`"
                                                 if args.wandb_group else ""))
    report = render_report(shlex.join([PROG, *argv]), sources, runs, table, problems, plots)
    markdown, csv = out.with_name(out.name + ".md"), out.with_name(out.name + ".csv")
    with atomic_file(markdown) as handle:  # tables are read by scripts and papers
        handle.write(report)
    write_csv(table, csv)
    if (out.parent / provenance.PROVENANCE).exists():  # a results/ folder: say what made it
        made_by = [*(f"{grid.command} (-> {grid.sweep_dir.name})" for grid in grids
                     if grid.command), shlex.join([PROG, *argv])]
        made_at = provenance.runs_commit(run.record for run in runs)
        provenance.record(out.parent, out.name, [p.name for p in (markdown, csv, *plots)],
                          "; then ".join(made_by), made_at, machine=args.machine)
    print(report)
    print("wrote:", *(str(p) for p in (markdown, csv, *plots)), sep="\n  ")


def main(argv: list[str] | None = None) -> int:
    """Exit code: 0, or 2 after one ``lepton-exp-results: error: ...`` line."""
    try:
        run(sys.argv[1:] if argv is None else list(argv))
    except ResultsError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
