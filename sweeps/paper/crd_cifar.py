"""CRD's CIFAR-100 benchmark (Tian et al., ICLR 2020, Table 1 subset) with lepton-exp.

Three teacher -> student pairs x {student alone, KD, FitNet, AT, DKD}, with the training
recipe of conf/experiment/crd_cifar100.yaml, and a table with the published numbers beside
ours (CRD Table 1; DKD from Zhao et al., CVPR 2022, Table 1).

    python sweeps/paper/crd_cifar.py --scale paper --data-root <cifar100 dir>   # GPUs: days
    python sweeps/paper/crd_cifar.py --scale cpu                                # here: ~20 min

``--scale cpu`` is the same pipeline shrunk to run on 2 CPU cores: CIFAR-10 (the CIFAR on
this machine, ../shared/data/cifar10), 2000 training images, teachers 10 epochs, students
6 epochs, one seed, no augmentation, and only the first two pairs (resnet32x4 costs 1.1
GMACs per image: its teacher alone would take most of an hour here; `--pairs` adds it).
Its numbers are not comparable to the paper's: the published column is there to compare
orderings. Per pair, a first command trains the teacher (cached) and the KD student with all
cores, then one `lepton-exp -m` sweep runs the other methods in parallel (the KD job is
found complete and skipped) and one runs DKD; re-running the script skips complete runs.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from lepton_exp.results import build_table, collect_records  # noqa: E402
from lepton_exp.results.table import format_cell  # noqa: E402

PAIRS = [("resnet56", "resnet20"), ("wrn_40_2", "wrn_16_2"), ("resnet32x4", "resnet8x4")]
METHODS = ["none", "kd", "fitnet", "at", "dkd"]
LABELS = {"none": "student alone", "kd": "KD", "fitnet": "FitNet", "at": "AT", "dkd": "DKD"}
# Top-1 test accuracy (%) on CIFAR-100, 240 epochs: CRD Table 1 (teacher, student, KD,
# FitNet, AT) and DKD Table 1 (DKD).
PUBLISHED = {
    ("resnet56", "resnet20"): {"teacher": 72.34, "none": 69.06, "kd": 70.66, "fitnet": 69.21,
                               "at": 70.55, "dkd": 71.97},
    ("wrn_40_2", "wrn_16_2"): {"teacher": 75.61, "none": 73.26, "kd": 74.92, "fitnet": 73.58,
                               "at": 74.08, "dkd": 76.24},
    ("resnet32x4", "resnet8x4"): {"teacher": 79.42, "none": 72.50, "kd": 73.33,
                                  "fitnet": 73.50, "at": 73.44, "dkd": 76.32},
}
SCALES = {
    "paper": {"overrides": ["experiment=crd_cifar100"], "seeds": "0,1,2", "epochs": 240,
              "about": "CIFAR-100, 240 epochs, batch 64, 3 seeds (the paper's recipe)"},
    "cpu": {"overrides": ["experiment=crd_cifar100", "data=cifar10", "data.train_subset=2000",
                          "data.val_subset=500", "data.test_subset=1000", "data.augment=false",
                          "trainer.max_epochs=6", "teacher.max_epochs=10",
                          "trainer.enable_model_summary=false"],
            "seeds": "0", "epochs": 6, "pairs": PAIRS[:2],
            "about": "CIFAR-10 (2000 training images, 500 validation, 1000 test), students 6 "
                     "epochs, teachers 10 epochs (same recipe otherwise), no augmentation, "
                     "1 seed"},
}
METRICS = ["test_best/acc", "test/acc"]


def sweep_commands(scale: str, data_root: str | None, jobs: int, root: Path,
                   pairs: list[tuple[str, str]]) -> list[tuple[Path, list[str]]]:
    """One sweep per pair for the methods sharing a recipe, one for DKD (its warm-up, 20 of
    240 epochs, scaled to the run's length)."""
    setting = SCALES[scale]
    common = list(setting["overrides"])
    if data_root:
        common.append(f"data.root={data_root}")
    common += ["trainer.enable_progress_bar=false", f"seed={setting['seeds']}"]
    parallel = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"] if jobs > 1 else []
    warmup = round(20 / 240 * setting["epochs"], 4)
    commands = []
    for teacher, student in pairs:
        pair = [f"model={student}", f"teacher.model.name={teacher}"]
        sweep_dir = root / f"{teacher}-{student}"
        # the teacher (and the KD student) with all cores first: parallel jobs get a share
        for launcher, methods in (([], "kd"), (parallel, "none,kd,fitnet,at")):
            commands.append((sweep_dir, ["lepton-exp", "-m", *common, *launcher, *pair,
                                         f"distill={methods}", f"hydra.sweep.dir={sweep_dir}"]))
        commands.append((root / f"{teacher}-{student}-dkd", [
            "lepton-exp", "-m", *common, *pair, "distill=dkd", f"distill.warmup_epochs={warmup}",
            f"hydra.sweep.dir={root / f'{teacher}-{student}-dkd'}"]))
    return commands


def teacher_accuracy(runs, teacher: str, student: str) -> float | None:
    for run in runs:
        if (run.get("teacher.model.name"), run.get("model.name")) == (teacher, student):
            for source in run.record.get("teachers") or []:
                if "test_best/acc" in source.get("metrics", {}):
                    return source["metrics"]["test_best/acc"]
    return None


def write_table(runs, scale: str, command: str, out: Path,
                pairs: list[tuple[str, str]]) -> str:
    table = build_table(runs, ["teacher.model.name", "model.name", "method"], None, METRICS)
    ratio = 240 // SCALES[scale]["epochs"]
    lines = [
        f"# CRD CIFAR benchmark, `{scale}` scale", "",
        f"Made by `{command}`; {SCALES[scale]['about']}.",
        "Ours: test accuracy (%) of the best-validation epoch (`test_best/acc`) and of the last "
        "epoch, mean ± std over seeds (n runs). Published: CIFAR-100, 240 epochs (CRD Table 1; "
        "DKD Table 1)." + (f" The {scale} scale uses other data, {ratio}x fewer epochs and a "
                           "weaker teacher: compare orderings (does a method beat the student "
                           "alone?), not numbers." if scale != "paper" else ""), "",
        "| teacher → student | method | ours, best epoch | ours, last epoch | published |",
        "| --- | --- | --- | --- | --- |",
    ]
    rows = []
    for teacher, student in pairs:
        published = PUBLISHED[(teacher, student)]
        accuracy = teacher_accuracy(runs, teacher, student)
        lines.append(f"| {teacher} → {student} | teacher | "
                     f"{'—' if accuracy is None else f'{100 * accuracy:.2f} (n=1)'} | | "
                     f"{published['teacher']:.2f} |")
        for method in METHODS:
            cells = [table.cells.get((metric, (teacher, student, method), None))
                     for metric in METRICS]
            shown = ["—" if cell is None else format_cell(_percent(cell), 2) for cell in cells]
            lines.append(f"| {teacher} → {student} | {LABELS[method]} | {shown[0]} | "
                         f"{shown[1]} | {published[method]:.2f} |")
            rows.append({"teacher": teacher, "student": student, "method": method,
                         **{f"{metric} mean": None if cell is None else 100 * cell.mean
                            for metric, cell in zip(METRICS, cells, strict=True)},
                         "n": None if cells[0] is None else cells[0].n,
                         "published": published[method]})
    failed = [run for run in runs if run.status != "completed" and not run.is_pipeline]
    if failed:
        lines += ["", "Runs that did not complete:"]
        lines += [f"- `{run.where}`: {run.status} {run.record.get('error', '')}" for run in failed]
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    with out.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return text


def _percent(cell):
    from lepton_exp.results.table import Cell

    return Cell([100 * value for value in cell.values])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--data-root", help="CIFAR directory (cpu default: "
                        "../shared/data/cifar10 beside the repository)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (joblib launcher)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="where the sweeps go (default: $LEPTON_OUTPUT_DIR or outputs)")
    parser.add_argument("--pairs", default=None,
                        help="comma-separated teacher:student subset, e.g. resnet56:resnet20")
    parser.add_argument("--out", type=Path, default=None,
                        help="table path without suffix (default: results/paper_crd_<scale>)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args()

    data_root = args.data_root
    if args.scale == "cpu" and data_root is None:
        data_root = str(REPO.parent / "shared" / "data" / "cifar10")
    output_dir = args.output_dir or Path(os.environ.get("LEPTON_OUTPUT_DIR", "outputs"))
    pairs = ([tuple(p.split(":")) for p in args.pairs.split(",")] if args.pairs
             else SCALES[args.scale].get("pairs", PAIRS))
    root = output_dir.resolve() / "paper" / f"crd_{args.scale}"
    commands = sweep_commands(args.scale, data_root, args.jobs, root, pairs)
    env = {**os.environ, "LEPTON_OUTPUT_DIR": str(output_dir.resolve())}
    exe = str(Path(sys.executable).parent / "lepton-exp")
    for _, command in commands:
        print("$", shlex.join(command), flush=True)
        if not args.dry_run:
            subprocess.run([exe, *command[1:]], check=True, env=env)
    if args.dry_run:
        return
    runs = collect_records(sorted({directory for directory, _ in commands}))
    out = args.out or REPO / "results" / f"paper_crd_{args.scale}"
    command = shlex.join(["python", "sweeps/paper/crd_cifar.py", *sys.argv[1:]])
    print(write_table(runs, args.scale, command, out, pairs))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
