"""The short console report at the end of a run: key metrics and where everything is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# Shown first, in this order, when present; other metrics follow in the record only.
HEADLINE = ("test/acc", "test_best/acc", "test/acc_top5", "test_best/acc_top5", "val/acc_best",
            "test/loss", "epochs")


def summary_table(record: dict[str, Any]) -> Table:
    table = Table(title=f"{record['name']} ({record['stage']}): {record['status']}",
                  show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    metrics = record.get("metrics", {})
    for key in HEADLINE:
        if key in metrics:
            value = metrics[key]
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    if "num_params" in record:
        table.add_row("params", f"{record['num_params']:,}")
        table.add_row("model size", f"{record['model_size_bytes'] / 1024:.1f} KiB")
    table.add_row("wall time", f"{record.get('wall_time_s', 0):.1f} s")
    return table


def print_summary(record: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(soft_wrap=True)
    console.print(summary_table(record))
    run_dir = Path(record["run_dir"])
    console.print(f"run record:  {run_dir / 'summary.json'}")
    for kind, path in (record.get("checkpoints") or {}).items():
        if path:
            console.print(f"checkpoint ({kind}): {path}")
    wandb = record.get("wandb")
    if wandb:
        if wandb.get("mode") == "offline":
            console.print(f"W&B run (offline): {wandb['dir']}  "
                          f"-> upload: wandb sync {wandb['dir']}")
        else:
            console.print(f"W&B run: {wandb.get('url') or wandb['dir']}")


def pipeline_table(record: dict[str, Any]) -> Table:
    table = Table(title=f"{record['name']} (pipeline): {record['status']}", show_header=True,
                  header_style="bold")
    for column in ("step", "model", "distill", "test/acc", "test_best/acc", "params",
                   "size KiB"):
        table.add_column(column, justify="left" if column in ("step", "model", "distill")
                         else "right")
    for name, step in record["steps"].items():
        metrics = step.get("metrics") or {}
        accuracy = [f"{metrics[key]:.4f}" if key in metrics else "-"
                    for key in ("test/acc", "test_best/acc")]
        terms = step.get("distill_terms")
        size = step.get("model_size_bytes")
        table.add_row(name, str(step.get("model")),
                      "+".join(terms) if terms else ("-" if terms is None else "none"),
                      *accuracy,
                      f"{step['num_params']:,}" if step.get("num_params") else "-",
                      f"{size / 1024:.1f}" if size else "-")
    return table


def print_pipeline(record: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(soft_wrap=True)
    console.print(pipeline_table(record))
    console.print(f"pipeline record: {Path(record['run_dir']) / 'summary.json'}")
    for name, step in record["steps"].items():
        console.print(f"  {name}: {step.get('run_dir')}")
