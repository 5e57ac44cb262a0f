"""GLUE distillation across tasks -> one table (``results/glue_<scale>.md`` + ``.csv``).

Runs, as a user would (conf/experiment/glue_distill.yaml: per task a pretrained MiniLM-L6
teacher finetuned and cached, bert_mini alone, bert_mini distilled; conf/sweep/glue.yaml:
the nine tasks):

    lepton-exp -m experiment=glue_distill sweep=glue data.root=<root> [data.task=...]

then one table: a row per step, a column per task with the task's GLUE metrics on its dev
set, x 100 (CoLA MCC; MRPC, QQP F1/acc; STS-B Pearson/Spearman; MNLI matched/mismatched
acc; the others acc), mean ± std over seeds (the CSV has every figure in full).

    python sweeps/glue.py --root <dir holding CoLA/, MNLI/, ...>   # GPU scale, all tasks
    python sweeps/glue.py --root <dir> --scale tiny --tasks rte   # CPU smoke run, 1 epoch
    python sweeps/glue.py --table-only --scale gpu                 # table of earlier runs

``--scale tiny`` (bert_tiny, at most 256 training pairs, length 32, 1 epoch each) checks
that every task runs end to end -- on GLUE or on small files in its layout -- and says
nothing about accuracy.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lepton_exp.data.sets.glue import TASKS  # noqa: E402
from lepton_exp.results import build_table, collect_records  # noqa: E402
from lepton_exp.results.report import write_markdown  # noqa: E402
from lepton_exp.results.sweep import run_sweep_command  # noqa: E402
from lepton_exp.results.table import Cell, Table, write_csv  # noqa: E402

SCALES = {
    "gpu": {"overrides": [], "seeds": "0",
            "about": "GLUE settings: full training sets, max length 128, teacher 3 epochs, "
                     "students 10 epochs"},
    "tiny": {"overrides": ["trainer=cpu", "model=bert_tiny", "data.train_subset=256",
                           "data.val_size=0.2", "data.val_subset=64", "data.test_subset=256",
                           "data.max_length=32", "data.batch_size=16", "data.num_workers=0",
                           "teacher.max_epochs=1", "trainer.max_epochs=1"],
             "seeds": "0",
             "about": "a smoke run: bert_tiny, at most 256 training pairs, max length 32, 1 "
                      "epoch each; not a result"},
}
STEPS = [("teacher", "teacher: MiniLM-L6 (pretrained), finetuned"),
         ("student", "student alone"),
         ("distilled", "distilled: KD + attention KL + hidden MSE")]
# What each task's cell shows, as GLUE reports it (MNLI: matched/mismatched).
LABELS = {"mnli": "m/mm acc"}


def task_metrics(task: str) -> list[str]:
    """The record keys of ``task``'s GLUE metrics (last epoch, tested on GLUE's dev set)."""
    if task == "mnli":
        return ["test/acc", "test_mismatched/acc"]
    names = TASKS[task].metrics
    return [f"test/{name}" for name in (names[:1] if task == "cola" else names)]  # CoLA: MCC


def _metric_label(task: str) -> str:
    return LABELS.get(task) or "/".join(key.split("/")[1] for key in task_metrics(task))


def sweep_command(root: str, tasks: list[str], scale: str, seeds: str,
                  sweep_dir: Path) -> list[str]:
    return ["lepton-exp", "-m", "experiment=glue_distill", "sweep=glue", f"data.root={root}",
            f"data.task={','.join(tasks)}", f"seed={seeds}", *SCALES[scale]["overrides"],
            "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep_dir}"]


def _shown(cells: list[Cell | None]) -> str:
    """``a/b`` x 100 (± std over seeds when more than one run)."""
    if any(cell is None for cell in cells):
        return "—"
    text = "/".join(f"{100 * cell.mean:.1f}" for cell in cells)
    spread = [cell.std for cell in cells]
    if all(std is not None for std in spread):
        text += " ± " + "/".join(f"{100 * std:.1f}" for std in spread)
    return f"{text} (n={min(cell.n for cell in cells)})"


def glue_table(sweep_dir: Path, tasks: list[str]) -> tuple[list[str], Table, list]:
    """Markdown lines of the table, the underlying results table and the runs."""
    runs = collect_records([sweep_dir])
    metrics = sorted({metric for task in tasks for metric in task_metrics(task)})
    table = build_table(runs, ["step"], "data.task", [*metrics, "num_params"])
    header = [f"{TASKS[task].folder} ({_metric_label(task)})" for task in tasks]
    lines = ["| step | params | " + " | ".join(header) + " |",
             "| --- | ---: |" + " --- |" * len(tasks)]
    for step, label in STEPS:
        params = [table.cells.get(("num_params", (step,), task)) for task in tasks]
        shown_params = next((f"{cell.mean:,.0f}" for cell in params if cell), "—")
        cells = [_shown([table.cells.get((metric, (step,), task))
                         for metric in task_metrics(task)]) for task in tasks]
        lines.append(f"| {label} | {shown_params} | " + " | ".join(cells) + " |")
    return lines, table, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="the directory holding GLUE's task directories "
                        "(CoLA/, MNLI/, ...); default: ../shared/data/glue")
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help=f"comma-separated tasks (default: all: {','.join(TASKS)})")
    parser.add_argument("--scale", choices=sorted(SCALES), default="gpu")
    parser.add_argument("--seeds", help="comma-separated student seeds (default: 0)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="where the sweep goes (default: $LEPTON_OUTPUT_DIR or outputs)")
    parser.add_argument("--out", type=Path, default=None,
                        help="table path without suffix (default: results/glue_<scale>)")
    parser.add_argument("--table-only", action="store_true", help="table of earlier runs")
    parser.add_argument("--dry-run", action="store_true", help="print the command only")
    args = parser.parse_args()

    tasks = [task.strip() for task in args.tasks.split(",") if task.strip()]
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}: choose from {', '.join(TASKS)}")
    setting = SCALES[args.scale]
    root = args.root or str(REPO.parent / "shared" / "data" / "glue")
    output_dir = (args.output_dir or Path(os.environ.get("LEPTON_OUTPUT_DIR", "outputs"))
                  ).resolve()
    sweep_dir = output_dir / "glue" / args.scale
    command = sweep_command(root, tasks, args.scale, args.seeds or setting["seeds"], sweep_dir)
    if not args.table_only:
        run_sweep_command(command, output_dir, args.dry_run)
        if args.dry_run:
            return
    lines, table, runs = glue_table(sweep_dir, tasks)
    made_by = shlex.join(["python", "sweeps/glue.py", *sys.argv[1:]])
    lines = [f"# GLUE distillation, `{args.scale}` scale", "",
             f"Made by `{made_by}` ({setting['about']}); every figure measured by these "
             "runs on GLUE's dev sets, x 100, last epoch.", "", *lines]
    out = args.out or REPO / "results" / f"glue_{args.scale}"
    markdown = write_markdown(lines, runs, out)
    write_csv(table, out.with_suffix(".csv"))
    print(f"wrote {markdown} and {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
