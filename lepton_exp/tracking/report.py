"""The short console report at the end of a run: key metrics and where everything is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

# Shown first, in this order, when present; other metrics follow in the record only.
HEADLINE = ("test_dense/acc", "test_pruned/acc", "test/acc", "test_best/acc", "test/acc_top5",
            "test_best/acc_top5", "val/acc_best", "test/loss", "epochs")


def headline(record: dict[str, Any]) -> list[str]:
    """HEADLINE, then the data's own metrics on every test split (GLUE: ``test/mcc``,
    ``test_mismatched/acc``, ``test/pearson``, ...)."""
    data = record.get("data") or {}
    tests = [f"{prefix}{suffix}" for suffix in ("", *(f"_{name}" for name in
                                                    data.get("extra_tests") or ()))
             for prefix in ("test", "test_best")]
    own = [f"{split}/{name}" for split in tests for name in data.get("metrics") or ()]
    return [*HEADLINE, *(key for key in own if key not in HEADLINE)]


def summary_table(record: dict[str, Any]) -> Table:
    table = Table(title=f"{record['name']} ({record['stage']}): {record['status']}",
                  show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    metrics = record.get("metrics", {})
    for key in headline(record):
        if key in metrics:
            value = metrics[key]
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    if "num_params" in record:
        table.add_row("params", f"{record['num_params']:,}")
        table.add_row("model size", f"{record['model_size_bytes'] / 1024:.1f} KiB")
    table.add_row("wall time", f"{record.get('wall_time_s', 0):.1f} s")
    return table


# The compression report's rows: (label, key in compression_report, format)
COMPRESSION_ROWS = (
    ("test acc", None, "{:.4f}"), ("sparsity", "sparsity", "{:.3f}"),
    ("params", "params", "{:,}"), ("non-zero params", "nonzero_params", "{:,}"),
    ("dense bytes", "dense_bytes", "{:,}"), ("sparse-stored bytes", "sparse_bytes", "{:,}"),
    ("MACs", "macs", "{:,}"), ("latency b1 (ms)", "latency_ms_b1", "{:.3f}"))


def compression_table(record: dict[str, Any]) -> Table:
    """Dense vs pruned, every figure measured (prune runs)."""
    dense, pruned = record["compression"]["dense"], record["compression"]["pruned"]
    metrics = record.get("metrics", {})
    batch_key = next((key for key in pruned if key.startswith("latency_ms_b")
                      and key != "latency_ms_b1"), None)
    rows = list(COMPRESSION_ROWS)
    if batch_key:
        rows.append((f"latency b{batch_key.removeprefix('latency_ms_b')} (ms)", batch_key,
                     "{:.3f}"))
    table = Table(title="compression (measured)", show_header=True, header_style="bold")
    for column in ("", "dense", "pruned", "dense / pruned"):
        table.add_column(column, justify="left" if not column else "right")
    for label, key, fmt in rows:
        if key is None:
            values = [metrics.get("test_dense/acc"), metrics.get("test/acc")]
        else:
            values = [dense.get(key), pruned.get(key)]
        cells = [fmt.format(v) if v is not None else "-" for v in values]
        ratio = (f"{values[0] / values[1]:.2f}x" if key and key != "sparsity" and values[1]
                 else "")
        table.add_row(label, *cells, ratio)
    return table


def quant_table(record: dict[str, Any]) -> Table:
    """Float vs int8, every figure measured (runs with quant set)."""
    quant, metrics = record["quant"], record.get("metrics", {})
    float_side, int8_side = quant["float"], quant["int8"]
    rows = [("test acc", metrics.get("test/acc"), metrics.get("test_int8/acc"), "{:.4f}"),
            ("bytes", float_side["size_bytes"], int8_side["size_bytes"], "{:,}")]
    rows += [(f"latency {key.removeprefix('latency_ms_')} (ms)", float_side.get(key),
              int8_side.get(key), "{:.3f}") for key in int8_side if key.startswith("latency")]
    table = Table(title=f"quantization ({quant['method']}, measured on CPU)", show_header=True,
                  header_style="bold")
    for column in ("", "float32", "int8", "float / int8"):
        table.add_column(column, justify="left" if not column else "right")
    for label, before, after, fmt in rows:
        ratio = f"{before / after:.2f}x" if label != "test acc" and before and after else ""
        table.add_row(label, *["-" if v is None else fmt.format(v) for v in (before, after)],
                      ratio)
    return table


def deploy_table(record: dict[str, Any]) -> Table:
    """Each deployment export in its runtime beside the eager model (runs with export set)."""
    deploy = record["deploy"]
    batches = sorted({key for export in deploy["exports"].values() for key in export
                      if key.startswith("latency_ms_")},
                     key=lambda key: int(key.removeprefix("latency_ms_b")))
    table = Table(title=f"deployment exports (measured on CPU, {deploy['threads']} threads)",
                  show_header=True, header_style="bold")
    for column in ("export", "runtime", "precision", "test acc", "KiB", *[
            f"ms {key.removeprefix('latency_ms_')}" for key in batches], "max |Δ|", "top-1 ="):
        table.add_column(column, justify="left" if column in ("export", "runtime",
                                                               "precision") else "right")
    for key, export in deploy["exports"].items():
        if export.get("skipped"):
            table.add_row(key, "-", export["precision"], "skipped (below)")
            continue
        accuracy = (export.get("test") or {}).get("acc")
        size = export.get("file_bytes", record.get("model_size_bytes"))
        table.add_row(key, export["runtime"], export["precision"],
                      "-" if accuracy is None else f"{accuracy:.4f}",
                      "-" if size is None else f"{size / 1024:.1f}",
                      *[f"{export[b]:.3f}" if b in export else "-" for b in batches],
                      f"{export['max_abs_diff']:.2g}" if "max_abs_diff" in export else "-",
                      f"{export['top1_agreement']:.3f}" if "top1_agreement" in export else "-")
    return table


def _console() -> Console:
    console = Console(soft_wrap=True)
    if not console.is_terminal:  # a log file or pipe: no reason to squeeze tables to 80
        console = Console(soft_wrap=True, width=max(console.width, 150))
    return console


def print_summary(record: dict[str, Any], console: Console | None = None) -> None:
    console = console or _console()
    console.print(summary_table(record))
    if record.get("compression"):
        console.print(compression_table(record))
    if record.get("quant"):
        console.print(quant_table(record))
        fallback = record["quant"].get("fallback") or {}
        for name, layer in fallback.items():
            console.print(f"float fallback: {name}: {layer['why']} ({layer['fallback']})")
        console.print(f"int8 model: {record['quant']['exported']}")
    if record.get("deploy"):
        console.print(deploy_table(record))
        for key, export in record["deploy"]["exports"].items():
            if export.get("skipped"):
                console.print(f"{key} skipped: {export['skipped']}")
        console.print(f"deployment folder (runs alone, inputs.json says what it takes): "
                      f"{record['deploy']['dir']}")
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


BATCH = 64  # the pipeline table's batched latency column (prune's and static int8's default)


def pipeline_table(record: dict[str, Any]) -> Table:
    """One row per step; a quantized step gets a second row, its int8 model."""
    table = Table(title=f"{record['name']} (pipeline): {record['status']}", box=box.SIMPLE_HEAD,
                  pad_edge=False, collapse_padding=True,
                  show_header=True, header_style="bold")
    # test/acc and test_best/acc (the last and the best-validation epochs) as acc, best
    for column in ("step", "model", "distill", "prune", "quant", "acc", "best", "params",
                   "non-zero", "sparsity", "MACs", "KiB", "ms b1", f"ms b{BATCH}"):
        table.add_column(column, no_wrap=True, justify="left" if column in (
            "step", "model", "distill", "prune", "quant") else "right")
    for name, step in record["steps"].items():
        for row in _step_rows(name, step):
            table.add_row(*row)
    return table


def _step_rows(name: str, step: dict[str, Any]) -> list[list[str]]:
    metrics = step.get("metrics") or {}
    quant = step.get("quant")
    accuracy = [f"{metrics[key]:.4f}" if key in metrics else "-"
                for key in ("test/acc", "test_best/acc")]
    terms = step.get("distill_terms")
    distill = "+".join(terms) if terms else ("-" if terms is None else "none")
    # Measured by prune steps (and by the quantization step); others show parameters only.
    measured = [metrics.get(f"compress/{key}") for key in ("nonzero_params", "sparsity",
                                                           "macs")]
    # a quantized step's float latency was timed in turns with its int8 model: that one
    latency = [(quant or {}).get("float", {}).get(key, metrics.get(f"compress/{key}"))
               for key in ("latency_ms_b1", f"latency_ms_b{BATCH}")]
    size = step.get("model_size_bytes")
    rows = [[name, str(step.get("model")), distill, step.get("prune") or "-",
             "float32" if quant else "-", *accuracy,
             f"{step['num_params']:,}" if step.get("num_params") else "-",
             *[("-" if value is None else fmt.format(value)) for value, fmt in
               zip(measured, ("{:,}", "{:.3f}", "{:,}"), strict=True)],
             f"{size / 1024:.1f}" if size else "-",
             *["-" if value is None else f"{value:.2f}" for value in latency]]]
    def other_model(label: str, precision: str, accuracy: Any, size_bytes: int,
                    measured: dict[str, Any]) -> list[str]:
        """A row for another form of the step's model (int8, a runtime's export): its own
        accuracy, bytes and latency; parameters and sparsity are the float row's."""
        return [f"{name} {label}", str(step.get("model")), distill, step.get("prune") or "-",
                precision, "-" if accuracy is None else f"{accuracy:.4f}", "-", *["-"] * 4,
                f"{size_bytes / 1024:.1f}",
                *[f"{measured[key]:.2f}" if key in measured else "-"
                  for key in ("latency_ms_b1", f"latency_ms_b{BATCH}")]]

    if quant:
        rows.append(other_model("int8", quant["method"], metrics.get("test_int8/acc"),
                                quant["int8"]["size_bytes"], quant["int8"]))
    for key, export in ((step.get("deploy") or {}).get("exports") or {}).items():
        if key != "eager" and not export.get("skipped"):
            rows.append(other_model(export["runtime"], export["precision"],
                                    metrics.get(f"test_{key}/acc"), export["file_bytes"],
                                    export))
    return rows


def print_pipeline(record: dict[str, Any], console: Console | None = None) -> None:
    console = console or _console()
    console.print(pipeline_table(record))
    console.print(f"pipeline record: {Path(record['run_dir']) / 'summary.json'}")
    for name, step in record["steps"].items():
        console.print(f"  {name}: {step.get('run_dir')}")
