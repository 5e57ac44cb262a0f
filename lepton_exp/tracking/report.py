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
