"""Distillation on real data: CIFAR-10 students alone and distilled with KD, FitNet, AT and
DKD from one teacher, several seeds, mean ± std.

    python -m benchmarks.cifar_distill --scale full     (whole suite: python -m benchmarks)

One sweep, run as a user would (`lepton-exp -m`, joblib with 2 jobs); the teacher is the
shared one of `benchmarks/cifar_setup.py`.
"""

from __future__ import annotations

import statistics

from benchmarks import cifar_setup
from benchmarks.common import (Options, Section, Target, command_text, main_for, markdown_table,
                               mean_std, records, run_cli)

METHODS = ["kd", "fitnet", "at", "dkd"]
LABELS = {"alone": "student alone", "kd": "KD", "fitnet": "FitNet", "at": "AT", "dkd": "DKD"}
PARALLEL = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def sweep(options: Options, weights) -> list[str]:
    """One sweep: every method (and `none`, the student alone) x every seed."""
    seeds = ",".join(map(str, cifar_setup.settings(options)["seeds"]))
    return ["-m", *cifar_setup.student_overrides(options, weights),
            "distill=none," + ",".join(METHODS), f"seed={seeds}", "logger=csv", *PARALLEL,
            f"hydra.sweep.dir={options.work_dir / 'cifar_distill'}"]


def method_of(record: dict) -> str:
    terms = record.get("distill_terms") or []
    return "+".join(terms) if terms else "alone"


def run(options: Options) -> Section:
    teacher = cifar_setup.teacher(options)
    s = cifar_setup.settings(options)
    command = sweep(options, teacher["exported"])
    run_cli(command, options, "cifar_distill")  # a re-run skips the jobs already complete
    accuracy: dict[str, list[float]] = {}
    best: dict[str, list[float]] = {}
    speed: dict[str, list[float]] = {}
    for record in records(options.work_dir / "cifar_distill"):
        method = method_of(record)
        accuracy.setdefault(method, []).append(record["metrics"]["test/acc"])
        best.setdefault(method, []).append(record["metrics"].get("test_best/acc", float("nan")))
        speed.setdefault(method, []).append(record["timing"]["train_samples_per_s"])
    alone = accuracy["alone"]
    rows = []
    for method in ["alone", *METHODS]:
        values = accuracy.get(method, [])
        gain = (statistics.fmean(values) - statistics.fmean(alone)) * 100 if values else 0
        rows.append([LABELS[method], len(values), mean_std(values), mean_std(best.get(method, [])),
                     "" if method == "alone" else f"{gain:+.2f}",
                     ", ".join(f"{v * 100:.2f}" for v in values),
                     f"{statistics.median(speed[method]):.0f}" if method in speed else "-"])
    kd = accuracy.get("kd", [])
    kd_gain = (statistics.fmean(kd) - statistics.fmean(alone)) * 100 if kd else float("nan")
    # non-overlapping: every KD seed above every seed of the student alone
    separated = bool(kd) and min(kd) > max(alone)
    spread_apart = bool(kd) and (statistics.fmean(kd) - statistics.stdev(kd)
                                 > statistics.fmean(alone) + statistics.stdev(alone))
    test_size = s["test_subset"] or "all 10,000"
    body = (
        f"Setup: CIFAR-10 from `{options.data_dir / 'cifar10'}`: a stratified "
        f"{s['train_subset']:,}-image training subset, {s['val_subset']:,} validation images "
        f"(held out of the training set), {test_size} test images. Teacher: "
        f"{s['teacher']}, {s['teacher_epochs']} epochs with augmentation (random crop + flip), "
        f"test accuracy **{teacher['metrics']['test/acc'] * 100:.2f} %**. Students: "
        f"{s['student']}, {s['student_epochs']} epochs without augmentation (so the teacher's "
        "outputs are computed once: the teacher-output cache), SGD lr 0.05, momentum 0.9, "
        "wd 5e-4, cosine, batch 128, each method's default settings "
        "(`conf/distill/<method>.yaml`: KD T = 4, alpha = 0.1; FitNet weight 100 on stage 2; "
        "AT weight 1000 on all stages; DKD 1/8, T = 4), seeds "
        f"{', '.join(map(str, s['seeds']))}. Accuracy: test set, last epoch (`test/acc`); "
        "`test_best/acc` is the epoch best on validation. mean ± sample std over seeds. "
        "Throughput: training samples/s (median over seeds; two jobs shared the 2 cores).\n\n"
        + markdown_table(["student", "n", "test acc % (last epoch)", "test acc % (best val "
                          "epoch)", "vs alone (points)", "per seed", "train samples/s"], rows)
        + f"\n\n**KD vs student alone: {kd_gain:+.2f} points; every KD seed above every "
        f"seed of the student alone: {'yes' if separated else 'no'}; mean ± std intervals "
        f"apart: {'yes' if spread_apart else 'no'}.**\n\nCommands (run from the repo, "
        "`LEPTON_DATA_DIR` set to the data directory):\n\n```bash\n"
        + command_text(cifar_setup.teacher_overrides(options)) + "\n"
        + command_text(command) + "\n```")
    wanted = "≥ +1 point, spreads apart"
    return Section("cifar_distill", "Distillation on CIFAR-10", body,
                   [Target("CIFAR-10: KD vs student alone", f"{kd_gain:+.2f} points, "
                           f"{'non-overlapping' if separated and spread_apart else 'overlapping'}",
                           wanted, kd_gain >= 1 and separated and spread_apart)])


if __name__ == "__main__":
    main_for(run)
