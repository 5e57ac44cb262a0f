"""CRD's CIFAR-100 benchmark (Tian et al., ICLR 2020, Tables 1 and 2) with lepton-exp: the 13
method columns (KD ... CRD) plus DKD, OFD, ReviewKD and DIST, for the tables' teacher ->
student pairs, with the published numbers beside ours (CRD Tables 1-2 as printed in
RepDistiller's README; DKD from mdistiller's README; OFD, ReviewKD and DIST: not in those
tables, "—"), with the training recipe of conf/experiment/crd_cifar100.yaml.

    python sweeps/paper/crd_cifar.py --scale paper --data-root <cifar100 dir>   # GPUs: days
    python sweeps/paper/crd_cifar.py --scale cpu                                # here: ~1 h

Each method runs as the CRD code runs it: its conf/distill yaml (CE weight 1, its own loss
weight, no KD), FitNet with the code's ConvReg connector, AB/FSP/FT with their 30-epoch
initialisation phase (scaled with the schedule), DKD and ReviewKD with their 20-epoch
warm-ups (scaled likewise).

``--scale cpu`` is the pipeline shrunk to run on 2 CPU cores: CIFAR-10 (the CIFAR on this
machine, ../shared/data/cifar10), 1000 training images, one pair whose teacher is clearly
better than its student alone at that size (resnet20, 40 epochs with augmentation ->
resnet8, 10 epochs without; the tables' deep teachers trained that briefly end up worse
than their students, and every method then lowers the student), CRD with 4096 negatives
(16384 cost 1 GB a step per side here), one seed. Its published column is the nearest pair
of the tables (resnet56 -> resnet20, CIFAR-100): compare orderings, not numbers. The script
says so when a teacher is not clearly better than its student alone.
Per pair, a first command trains the teacher (cached) and the KD student with all cores,
then `lepton-exp -m` sweeps run the other methods in parallel; re-running the script skips
complete runs.
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

TABLE1 = [("wrn_40_2", "wrn_16_2"), ("wrn_40_2", "wrn_40_1"), ("resnet56", "resnet20"),
          ("resnet110", "resnet20"), ("resnet110", "resnet32"), ("resnet32x4", "resnet8x4"),
          ("vgg13_cifar", "vgg8")]
TABLE2 = [("vgg13_cifar", "mobile_half"), ("resnet50_cifar", "mobile_half"),
          ("resnet50_cifar", "vgg8"), ("resnet32x4", "shufflev1"), ("resnet32x4", "shufflev2"),
          ("wrn_40_2", "shufflev1")]
PAIRS = TABLE1 + TABLE2
CRD_COLUMNS = ["kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst",
               "crd"]
METHODS = ["none", *CRD_COLUMNS, "dkd", "ofd", "reviewkd", "dist"]
LABELS = {"none": "student alone", "kd": "KD", "fitnet": "FitNet", "at": "AT", "sp": "SP",
          "cc": "CC", "vid": "VID", "rkd": "RKD", "pkt": "PKT", "ab": "AB", "ft": "FT",
          "fsp": "FSP", "nst": "NST", "crd": "CRD", "dkd": "DKD", "ofd": "OFD",
          "reviewkd": "ReviewKD", "dist": "DIST"}
# Top-1 test accuracy (%) on CIFAR-100, 240 epochs. Per pair: teacher, student alone, then the
# CRD columns in CRD_COLUMNS order (CRD Tables 1-2; Table 2 has no FSP: channel counts
# differ), then DKD (mdistiller's README).
_PUBLISHED_ROWS = {
    ("wrn_40_2", "wrn_16_2"): [75.61, 73.26, 74.92, 73.58, 74.08, 73.83, 73.56, 74.11, 73.35,
                               74.54, 72.50, 73.25, 72.91, 73.68, 75.48, 76.23],
    ("wrn_40_2", "wrn_40_1"): [75.61, 71.98, 73.54, 72.24, 72.77, 72.43, 72.21, 73.30, 72.22,
                               73.45, 72.38, 71.59, None, 72.24, 74.14, 74.81],
    ("resnet56", "resnet20"): [72.34, 69.06, 70.66, 69.21, 70.55, 69.67, 69.63, 70.38, 69.61,
                               70.34, 69.47, 69.84, 69.95, 69.60, 71.16, 71.97],
    ("resnet110", "resnet20"): [74.31, 69.06, 70.67, 68.99, 70.22, 70.04, 69.48, 70.16, 69.25,
                                70.25, 69.53, 70.22, 70.11, 69.53, 71.46, None],
    ("resnet110", "resnet32"): [74.31, 71.14, 73.08, 71.06, 72.31, 72.69, 71.48, 72.61, 71.82,
                                72.61, 70.98, 72.37, 71.89, 71.96, 73.48, 74.11],
    ("resnet32x4", "resnet8x4"): [79.42, 72.50, 73.33, 73.50, 73.44, 72.94, 72.97, 73.09,
                                  71.90, 73.64, 73.17, 72.86, 72.62, 73.30, 75.51, 76.32],
    ("vgg13_cifar", "vgg8"): [74.64, 70.36, 72.98, 71.02, 71.43, 72.68, 70.71, 71.23, 71.48,
                              72.88, 70.94, 70.58, 70.23, 71.53, 73.94, 74.68],
    ("vgg13_cifar", "mobile_half"): [74.64, 64.60, 67.37, 64.14, 59.40, 66.30, 64.86, 65.56,
                                     64.52, 67.13, 66.06, 61.78, None, 58.16, 69.73, 69.71],
    ("resnet50_cifar", "mobile_half"): [79.34, 64.60, 67.35, 63.16, 58.58, 68.08, 65.43, 67.57,
                                        64.43, 66.52, 67.20, 60.99, None, 64.96, 69.11, 70.35],
    ("resnet50_cifar", "vgg8"): [79.34, 70.36, 73.81, 70.69, 71.84, 73.34, 70.25, 70.30,
                                 71.50, 73.01, 70.65, 70.29, None, 71.28, 74.30, None],
    ("resnet32x4", "shufflev1"): [79.42, 70.50, 74.07, 73.59, 71.73, 73.48, 71.14, 73.38,
                                  72.28, 74.10, 73.55, 71.75, None, 74.12, 75.11, 76.45],
    ("resnet32x4", "shufflev2"): [79.42, 71.82, 74.45, 73.54, 72.73, 74.56, 71.29, 73.40,
                                  73.21, 74.69, 74.31, 72.50, None, 74.68, 75.65, None],
    ("wrn_40_2", "shufflev1"): [75.61, 70.50, 74.83, 73.73, 73.32, 74.52, 71.38, 73.61, 72.21,
                                73.89, 73.34, 72.03, None, 74.89, 76.05, 76.70],
}
PUBLISHED = {pair: dict(zip(["teacher", "none", *CRD_COLUMNS, "dkd"], row, strict=True))
             for pair, row in _PUBLISHED_ROWS.items()}
# the CRD code's settings that differ from a method's yaml default, per method
CODE_SETTINGS = {"fitnet": ["distill.terms.fitnet.connector=convreg"]}
WARMUP = {"dkd": "distill.warmup_epochs", "reviewkd": "distill.warmup_epochs"}  # 20 of 240
INIT_PHASE = ("ab", "fsp", "ft")  # 30 init epochs (of a 240-epoch schedule)
SCALES = {
    "paper": {"overrides": ["experiment=crd_cifar100"], "seeds": "0,1,2", "epochs": 240,
              "pairs": PAIRS,
              "about": "CIFAR-100, 240 epochs, batch 64, 3 seeds (the paper's recipe)"},
    "cpu": {"overrides": ["experiment=crd_cifar100", "data=cifar10", "data.train_subset=1000",
                          "data.val_subset=500", "data.test_subset=2000", "data.augment=false",
                          "trainer.max_epochs=10", "trainer.enable_model_summary=false"],
            # the teacher: a run of its own with augmentation, given to the students
            "teacher": ["data.augment=true", "trainer.max_epochs=40"],
            "methods": {"crd": ["distill.terms.crd.negatives=4096"]},
            "seeds": "0", "epochs": 10, "pairs": [("resnet20", "resnet8")],
            "nearest": {("resnet20", "resnet8"): ("resnet56", "resnet20")},
            "about": "CIFAR-10 (1000 training images, 500 validation, 2000 test), students 10 "
                     "epochs without augmentation, teacher resnet20 40 epochs with "
                     "augmentation (same recipe otherwise), CRD with 4096 negatives"},
    # checks the script end to end in a few minutes (numbers meaningless)
    "smoke": {"overrides": ["experiment=crd_cifar100", "data=cifar10", "data.train_subset=200",
                            "data.val_subset=100", "data.test_subset=200", "data.augment=false",
                            "trainer.max_epochs=1", "trainer.enable_model_summary=false"],
              "teacher": ["data.augment=true", "trainer.max_epochs=2"],
              "methods": {"crd": ["distill.terms.crd.negatives=256"]},
              "seeds": "0", "epochs": 1, "pairs": [("resnet20", "resnet8")],
              "nearest": {("resnet20", "resnet8"): ("resnet56", "resnet20")},
              "about": "a smoke test of the script (200 CIFAR-10 images, 1 epoch)"},
}
METRICS = ["test_best/acc", "test/acc"]


def _scaled(epochs: int, setting: dict) -> float:
    """``epochs`` of the code's 240-epoch schedule, scaled to the run's length."""
    return round(epochs / 240 * setting["epochs"], 4)


def method_overrides(method: str, setting: dict) -> list[str]:
    """What a method's runs set beyond ``distill=<method>``: the CRD code's settings, its
    phase or warm-up scaled to the schedule, the scale's own settings."""
    extra = list(CODE_SETTINGS.get(method, []))
    if method in WARMUP:
        extra.append(f"{WARMUP[method]}={_scaled(20, setting)}")
    if method in INIT_PHASE:
        extra.append(f"distill.terms.{method}.init_epochs={max(1, round(_scaled(30, setting)))}")
    return extra + setting.get("methods", {}).get(method, [])


def sweep_commands(scale: str, data_root: str | None, jobs: int, root: Path,
                   pairs: list[tuple[str, str]], seeds: str | None = None
                   ) -> list[tuple[Path, list[str]]]:
    """Per pair: the teacher (given scales: a run of its own) and KD with all cores, one
    sweep over the methods that take no settings of their own, one sweep per method that
    does; each command's sweep directory beside it."""
    setting = SCALES[scale]
    common = list(setting["overrides"])
    if data_root:
        common.append(f"data.root={data_root}")
    common += ["trainer.enable_progress_bar=false", f"seed={seeds or setting['seeds']}"]
    parallel = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"] if jobs > 1 else []
    commands = []
    for teacher, student in pairs:
        pair = [f"model={student}", f"teacher.model.name={teacher}"]
        name = f"{teacher}-{student}"
        if "teacher" in setting:
            teacher_dir = root / f"teacher-{teacher}"
            own = {override.split("=")[0] for override in setting["teacher"]}
            shared = [o for o in common[:-1] if o.split("=")[0] not in own]
            commands.append((teacher_dir, [
                "lepton-exp", "stage=teacher", "distill=none", *shared, f"model={teacher}",
                *setting["teacher"], f"hydra.run.dir={teacher_dir}"]))
            pair.append(f"teacher.checkpoint={teacher_dir / 'model.safetensors'}")
        plain = [m for m in METHODS if m != "kd" and not method_overrides(m, setting)]
        for launcher, methods in (([], ["kd"]), (parallel, plain)):
            commands.append((root / name, [
                "lepton-exp", "-m", *common, *launcher, *pair, f"distill={','.join(methods)}",
                f"hydra.sweep.dir={root / name}"]))
        for method in METHODS:
            if method != "kd" and method_overrides(method, setting):
                sweep_dir = root / f"{name}-{method}"
                commands.append((sweep_dir, [
                    "lepton-exp", "-m", *common, *parallel, *pair, f"distill={method}",
                    *method_overrides(method, setting), f"hydra.sweep.dir={sweep_dir}"]))
    return commands


def teacher_accuracy(runs, teacher: str, student: str) -> float | None:
    """The teacher's test accuracy (best-validation epoch) as its students' records say:
    from the teacher cache, or from the run that exported the given checkpoint."""
    import json

    for run in runs:
        if (run.get("teacher.model.name"), run.get("model.name")) != (teacher, student):
            continue
        for source in run.record.get("teachers") or []:
            metrics = source.get("metrics") or {}
            if not metrics and source.get("kind") == "checkpoint":
                record = Path(source["path"]).parent / "summary.json"
                metrics = json.loads(record.read_text()).get("metrics", {}) \
                    if record.is_file() else {}
            if "test_best/acc" in metrics:
                return metrics["test_best/acc"]
    return None


CLEARLY_BETTER = 2.0  # points: a teacher below its student alone + this teaches little


def _pair_rows(table, runs, scale: str, teacher: str, student: str) -> tuple[list, list, list]:
    """The pair's table lines, csv rows and warnings."""
    nearest = SCALES[scale].get("nearest", {}).get((teacher, student), (teacher, student))
    published = PUBLISHED.get(nearest, {})
    accuracy = teacher_accuracy(runs, teacher, student)
    lines = [f"| {teacher} → {student} | teacher | "
             f"{'—' if accuracy is None else f'{100 * accuracy:.2f} (n=1)'} | | "
             f"{_published(published.get('teacher'))} |"]
    rows, means = [], {}
    for method in METHODS:
        cells = [table.cells.get((metric, (teacher, student, method), None))
                 for metric in METRICS]
        shown = ["—" if cell is None else format_cell(_percent(cell), 2) for cell in cells]
        if cells[0] is not None:
            means[method] = 100 * cells[0].mean
        lines.append(f"| {teacher} → {student} | {LABELS[method]} | {shown[0]} | "
                     f"{shown[1]} | {_published(published.get(method))} |")
        rows.append({"teacher": teacher, "student": student, "method": method,
                     **{f"{metric} mean": None if cell is None else 100 * cell.mean
                        for metric, cell in zip(METRICS, cells, strict=True)},
                     "n": None if cells[0] is None else cells[0].n,
                     "published": published.get(method)})
    warnings = []
    alone = means.get("none")
    if accuracy is not None and alone is not None and 100 * accuracy < alone + CLEARLY_BETTER:
        warnings.append(f"**{teacher} → {student}: the teacher ({100 * accuracy:.2f} %) is not "
                        f"clearly better than the student alone ({alone:.2f} %): distillation "
                        "from it can only lower the student; train the teacher longer or pick "
                        "a wider pair.**")
    if alone is not None:
        beat = [LABELS[m] for m in METHODS[1:] if m in means and means[m] > alone]
        ours = sorted((m for m in METHODS[1:] if m in means), key=lambda m: -means[m])
        theirs = sorted((m for m in ours if published.get(m) is not None),
                        key=lambda m: -published[m])
        warnings.append(
            f"{teacher} → {student}: {len(beat)} of {len(means) - 1} methods beat the student "
            f"alone ({', '.join(beat) or 'none'}). Ours, best first: "
            f"{', '.join(LABELS[m] for m in ours)}; published ({nearest[0]} → {nearest[1]}), "
            f"best first: {', '.join(LABELS[m] for m in theirs) or '—'}.")
    return lines, rows, warnings


def _published(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def write_table(runs, scale: str, command: str, out: Path,
                pairs: list[tuple[str, str]]) -> str:
    table = build_table(runs, ["teacher.model.name", "model.name", "method"], None, METRICS)
    ratio = 240 // SCALES[scale]["epochs"]
    nearest = SCALES[scale].get("nearest")
    lines = [
        f"# CRD CIFAR benchmark, `{scale}` scale", "",
        f"Made by `{command}`; {SCALES[scale]['about']}.",
        "Ours: test accuracy (%) of the best-validation epoch (`test_best/acc`) and of the last "
        "epoch, mean ± std over seeds (n runs). Published: CIFAR-100, 240 epochs (CRD Tables "
        "1-2 as in RepDistiller's README; DKD from mdistiller's README; — where those tables "
        "have no number)." + (
            f" The {scale} scale uses other data, {ratio}x fewer epochs and a smaller pair"
            + (" (published: the nearest pair of the tables, " + ", ".join(
                f"{a} → {b} for {c} → {d}" for (c, d), (a, b) in nearest.items()) + ")"
               if nearest else "") + ": compare orderings (does a method beat the student "
            "alone?), not numbers." if scale != "paper" else ""), "",
        "| teacher → student | method | ours, best epoch | ours, last epoch | published |",
        "| --- | --- | --- | --- | --- |",
    ]
    rows, notes = [], []
    for teacher, student in pairs:
        pair_lines, pair_rows, pair_notes = _pair_rows(table, runs, scale, teacher, student)
        lines += pair_lines
        rows += pair_rows
        notes += pair_notes
    lines += ["", *notes]
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
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the "
                        "scale's)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args()

    data_root = args.data_root
    if args.scale != "paper" and data_root is None:
        data_root = str(REPO.parent / "shared" / "data" / "cifar10")
    output_dir = args.output_dir or Path(os.environ.get("LEPTON_OUTPUT_DIR", "outputs"))
    pairs = ([tuple(p.split(":")) for p in args.pairs.split(",")] if args.pairs
             else SCALES[args.scale].get("pairs", PAIRS))
    root = output_dir.resolve() / "paper" / f"crd_{args.scale}"
    commands = sweep_commands(args.scale, data_root, args.jobs, root, pairs, args.seeds)
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
