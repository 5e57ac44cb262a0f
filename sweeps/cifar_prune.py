"""CIFAR-10 prune-then-finetune sweep -> results/cifar_prune.md.

Runs, as a user would (`conf/experiment/cifar_prune.yaml`: resnet20 trained once on a
5000-image subset and cached, then pruned and finetuned for 3 epochs):

    lepton-exp experiment=cifar_prune prune=channel,magnitude prune.sparsity=0.3,0.5,0.7 -m
    lepton-exp experiment=cifar_prune prune=channel,magnitude prune.sparsity=0.5 \
        distill=kd prune.teacher=dense -m

then writes one table from the runs' records (every figure measured by the runs).

    python sweeps/cifar_prune.py --data-dir ../shared/data           # run + table
    python sweeps/cifar_prune.py --table-only --output-dir outputs    # table from earlier runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SWEEPS = {
    "plain": ["prune=channel,magnitude", "prune.sparsity=0.3,0.5,0.7"],
    "kd": ["prune=channel,magnitude", "prune.sparsity=0.5", "distill=kd",
           "prune.teacher=dense"],
}


def run_sweeps(output_dir: Path, data_dir: Path) -> list[str]:
    commands = []
    env = {**os.environ, "LEPTON_DATA_DIR": str(data_dir), "LEPTON_OUTPUT_DIR": str(output_dir)}
    for name, overrides in SWEEPS.items():
        command = [sys.executable, "-m", "lepton_exp", "experiment=cifar_prune", *overrides,
                   f"hydra.sweep.dir={output_dir / 'cifar_prune' / name}",
                   "trainer.enable_progress_bar=false", "-m"]
        commands.append(" ".join(command[2:]))
        subprocess.run(command, env=env, check=True)
    return commands


def _row(record: dict) -> list[str]:
    metrics, prune = record["metrics"], record["prune"]
    dense, pruned = record["compression"]["dense"], record["compression"]["pruned"]
    batch = next(k for k in pruned if k.startswith("latency_ms_b") and k != "latency_ms_b1")

    def acc(key: str) -> str:
        return f"{metrics[key]:.4f}" if key in metrics else "-"

    return [prune["method"], f"{prune['requested_sparsity']:g}",
            "+".join(record["distill_terms"]) or "none",
            acc("test_dense/acc"), acc("test_pruned/acc"), acc("test/acc"), acc("test_best/acc"),
            f"{pruned['sparsity']:.3f}", f"{pruned['nonzero_params']:,}",
            f"{pruned['sparse_bytes']:,}", f"{pruned['macs']:,}",
            f"{dense['latency_ms_b1'] / pruned['latency_ms_b1']:.2f}x",
            f"{dense[batch] / pruned[batch]:.2f}x ({dense[batch]:.1f} -> {pruned[batch]:.1f})"]


def table(output_dir: Path) -> tuple[str, list[dict]]:
    records = [json.loads(path.read_text()) for name in SWEEPS
               for path in sorted((output_dir / "cifar_prune" / name).glob("*/summary.json"))]
    failed = [r["run_dir"] for r in records if r["status"] != "completed"]
    done = [r for r in records if r["status"] == "completed"]
    done.sort(key=lambda r: (r["prune"]["method"], bool(r["distill_terms"]),
                             r["prune"]["requested_sparsity"]))
    header = ["method", "requested", "finetune distill", "test_dense/acc", "test_pruned/acc",
              "test/acc", "test_best/acc", "measured sparsity", "non-zero params",
              "sparse bytes", "MACs", "speed-up b1", "speed-up b64 (ms)"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in done]
    if failed:
        lines.append(f"\nFailed runs: {', '.join(failed)}")
    return "\n".join(lines), done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "cifar_prune.md")
    args = parser.parse_args()
    output_dir = args.output_dir.resolve()
    if not args.table_only:
        run_sweeps(output_dir, args.data_dir.resolve())
    text, records = table(output_dir)
    dense = records[0]["compression"]["dense"] if records else {}
    commits = sorted({(r["git"] or {}).get("commit", "?")[:10]
                      + (" (uncommitted changes)" if (r["git"] or {}).get("dirty") else "")
                      for r in records})
    args.out.write_text(
        "# CIFAR-10 prune-then-finetune: channel vs magnitude pruning, measured\n\n"
        f"Made by `python sweeps/cifar_prune.py` on {time.strftime('%Y-%m-%d')} "
        f"(runs at git commit {', '.join(commits)}); the runs' own commands are in the "
        "script's docstring. Setup: `conf/experiment/cifar_prune.yaml`.\n\n"
        f"Dense resnet20: {dense.get('params', 0):,} parameters, {dense.get('macs', 0):,} MACs."
        " Speed-ups are the dense model's median CPU latency over the pruned one's, both "
        "timed in turns in the same process at the end of each run. One seed per row: "
        "differences of about a point are within noise.\n\n" + text + "\n\n"
        "Reading it: `measured sparsity` is the zero fraction of all conv/linear weights "
        "(the stem and the classifier stay dense, hence slightly below the request for "
        "magnitude); channel pruning leaves no zeros but removes channels, which is where "
        "parameters, MACs and latency fall. Unstructured zeros cost the same MACs and time "
        "on dense CPU kernels; they pay off only in sparse storage (`sparse bytes`).\n")
    print(text)


if __name__ == "__main__":
    main()
