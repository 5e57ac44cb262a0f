"""Distillation on real data: every method of the zoo (the CRD table's 13 columns, DKD, OFD,
ReviewKD, DIST) and the student alone, CIFAR-10, 3 seeds, mean ± std, train samples/s.

    python -m benchmarks.cifar_zoo --scale full     (whole suite: python -m benchmarks)

The runs are the CPU scale of the paper script, sweeps/paper/crd_cifar.py (its teacher, its
methods' settings, its sweeps), with 3 seeds; the script then also writes its own table
(results/paper_crd_cpu.md) from the same runs, with the published numbers beside ours.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.common import (REPO, Options, Section, Target, main_for, markdown_table, mean_std,
                               records)

SEEDS = {"full": "0,1,2", "smoke": "0"}


def paper_script():
    """sweeps/paper/crd_cifar.py as a module (its settings, method list and helpers)."""
    spec = importlib.util.spec_from_file_location("crd_cifar",
                                                  REPO / "sweeps" / "paper" / "crd_cifar.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_command(options: Options) -> list[str]:
    scale = "cpu" if options.scale == "full" else "smoke"
    return ["python", "sweeps/paper/crd_cifar.py", "--scale", scale, "--seeds",
            SEEDS[options.scale], "--data-root", str(options.data_dir / "cifar10"),
            "--output-dir", str(options.work_dir)]


def run_dirs(options: Options) -> list:
    """Where the section's runs are (the paper script's sweep directories)."""
    scale = "cpu" if options.scale == "full" else "smoke"
    return sorted(p for p in (options.work_dir / "paper" / f"crd_{scale}").glob("*")
                  if p.is_dir() and not p.name.startswith("teacher-"))


def method_of(record: dict) -> str:
    terms = record.get("distill_terms") or []
    return "+".join(terms) if terms else "none"


def run(options: Options) -> Section:
    script = paper_script()
    command = script_command(options)
    # the script names the data itself (--data-root): paths.data_dir stays the default, so
    # the runs' configs (and their reuse by a re-run) do not depend on the environment
    env = {**{k: v for k, v in os.environ.items() if k != "LEPTON_DATA_DIR"},
           "WANDB_MODE": "offline"}
    subprocess.run([sys.executable, *command[1:]], check=True, cwd=REPO, env=env)

    accuracy: dict[str, list[float]] = {}
    speed: dict[str, list[float]] = {}
    teacher = None
    for directory in run_dirs(options):
        for record in records(directory):
            if record.get("stage") != "distill":  # AB/FSP/FT's initialisation phases
                continue
            method = method_of(record)
            accuracy.setdefault(method, []).append(record["metrics"]["test_best/acc"])
            speed.setdefault(method, []).append(record["timing"]["train_samples_per_s"])
            teacher = teacher or record["teachers"][0]["path"]
    return _section(script, options, command, accuracy, speed, teacher)


def _section(script, options, command, accuracy, speed, teacher_path) -> Section:
    teacher_acc = json.loads((Path(teacher_path).parent / "summary.json").read_text())[
        "metrics"]["test_best/acc"]
    alone = accuracy["none"]
    rows, beat = [], []
    for method in script.METHODS:
        values = accuracy.get(method, [])
        gain = (statistics.fmean(values) - statistics.fmean(alone)) * 100 if values else None
        if method != "none" and values and gain > 0:
            beat.append(script.LABELS[method])
        rows.append([script.LABELS[method], len(values), mean_std(values),
                     "" if method == "none" or gain is None else f"{gain:+.2f}",
                     ", ".join(f"{v * 100:.2f}" for v in values),
                     f"{statistics.median(speed[method]):.0f}" if method in speed else "-"])
    published = script.PUBLISHED[script.SCALES["cpu"]["nearest"][("resnet20", "resnet8")]]
    ours = sorted((m for m in script.METHODS[1:] if accuracy.get(m)),
                  key=lambda m: -statistics.fmean(accuracy[m]))
    theirs = sorted((m for m in ours if published.get(m) is not None),
                    key=lambda m: -published[m])
    paper_beat = [script.LABELS[m] for m in theirs if published[m] > published["none"]]
    s = script.SCALES["cpu"]
    body = (
        f"Setup: {s['about']}; pair resnet20 → resnet8, teacher test accuracy "
        f"**{teacher_acc * 100:.2f} %** (best-validation epoch), seeds "
        f"{SEEDS[options.scale]}; every method as the CRD code runs it "
        "(`conf/distill/<method>.yaml`, see the paper script's docstring). Accuracy: "
        "`test_best/acc` (the best-validation epoch), mean ± sample std over seeds. "
        "Throughput: training samples/s, median over seeds (two runs shared the 2 cores, "
        "except KD's, run first, alone; phased methods: the distillation phase).\n\n"
        + markdown_table(["method", "n", "test acc % (best val epoch)", "vs alone (points)",
                          "per seed", "train samples/s"], rows)
        + f"\n\n**{len(beat)} of {len(ours)} methods beat the student alone** "
        f"({', '.join(beat) or 'none'}). Ours, best first: "
        f"{', '.join(script.LABELS[m] for m in ours)}. The paper (resnet56 → resnet20, "
        f"CIFAR-100, 240 epochs), best first: {', '.join(script.LABELS[m] for m in theirs)};"
        f" there {len(paper_beat)} of {len(theirs)} beat the student alone.\n\n"
        "Command (from the repo; it also writes results/paper_crd_cpu.md from these runs):\n\n"
        "```bash\n" + " ".join(command) + "\n```")
    kd = accuracy.get("kd", [])
    kd_gain = (statistics.fmean(kd) - statistics.fmean(alone)) * 100 if kd else float("nan")
    return Section("cifar_zoo", "Distillation on CIFAR-10: the method zoo", body,
                   [Target("CIFAR-10 zoo (1000 images, 10 epochs): KD vs student alone",
                           f"{kd_gain:+.2f} points", "reported", True),
                    Target("CIFAR-10 zoo: methods above the student alone",
                           f"{len(beat)} of {len(ours)}", "reported", True)])


if __name__ == "__main__":
    main_for(run)
