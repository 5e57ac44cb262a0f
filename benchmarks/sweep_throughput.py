"""Sweep throughput: the same 4-run sweep run sequentially (Hydra's basic launcher, one
process) and in parallel (joblib, 2 jobs, each with its share of the cores).

    python -m benchmarks.sweep_throughput --scale full     (whole suite: python -m benchmarks)
"""

from __future__ import annotations

import shutil

from benchmarks.common import (Options, Section, Target, command_text, interleaved, main_for,
                               median, records, run_cli)

# Runs long enough that training, not a process's start-up (its imports, paid once by the
# sequential launcher and once per worker by joblib), is most of a run, as in a real sweep.
SCALES = {"full": dict(epochs=25, repeats=2), "smoke": dict(epochs=1, repeats=1)}
LAUNCHERS = {"sequential": [], "joblib, 2 jobs": ["hydra/launcher=joblib",
                                                   "hydra.launcher.n_jobs=2"]}


def sweep(options: Options, launcher: str, index: int) -> list[str]:
    where = options.work_dir / "sweep_throughput" / f"{launcher.split(',')[0]}_{index}"
    return ["-m", "stage=teacher", "model=resnet8", "seed=0,1,2,3",
            f"trainer.max_epochs={SCALES[options.scale]['epochs']}", "logger=csv",
            *LAUNCHERS[launcher], f"hydra.sweep.dir={where}"]


def run(options: Options) -> Section:
    s = SCALES[options.scale]
    counter = {name: 0 for name in LAUNCHERS}

    def variant(launcher: str):
        def measure() -> float:
            counter[launcher] += 1
            overrides = sweep(options, launcher, counter[launcher])
            shutil.rmtree(overrides[-1].split("=", 1)[1], ignore_errors=True)  # no skipping
            seconds = run_cli(overrides, options,
                              f"sweep_{launcher.split(',')[0]}_{counter[launcher]}")
            done = records(options.work_dir / "sweep_throughput"
                           / f"{launcher.split(',')[0]}_{counter[launcher]}")
            if len(done) != 4:
                raise RuntimeError(f"{launcher} sweep finished {len(done)} of 4 runs")
            return seconds
        return measure

    walls = interleaved({name: variant(name) for name in LAUNCHERS}, s["repeats"])
    sequential, parallel = median(walls["sequential"]), median(walls["joblib, 2 jobs"])
    ratio = sequential / parallel
    rows = "\n".join(f"| {name} | {' / '.join(f'{t:.1f}' for t in walls[name])} | "
                     f"{median(walls[name]):.1f} | {4 / median(walls[name]) * 60:.2f} |"
                     for name in LAUNCHERS)
    body = (
        "Setup: 4 runs (resnet8 on scikit-learn digits, seeds 0-3, "
        f"{s['epochs']} epochs each), the whole `lepton-exp -m` command timed, "
        f"{s['repeats']} alternating repeat(s) per launcher. Under joblib each job gets "
        "1 torch thread (2 cores / 2 jobs); sequentially the one process has 2. The "
        "sequential launcher runs every job in its one process and imports once; joblib "
        "starts a worker process per job slot, each paying the imports (timed in the "
        "overhead section): the runs train long enough that this start-up is not most of "
        "their time.\n\n"
        "| launcher | wall time per repeat (s) | median (s) | runs / minute |\n"
        f"| --- | ---: | ---: | ---: |\n{rows}\n\n"
        f"**Throughput ratio (sequential / parallel wall time): {ratio:.2f}x.**\n\n"
        "Commands (`lepton-exp` from the repo):\n\n```bash\n"
        + "\n".join(command_text(sweep(options, name, 1)) for name in LAUNCHERS) + "\n```")
    return Section("sweep", "Sweep throughput", body,
                   [Target("4-run sweep, joblib 2 jobs vs sequential", f"{ratio:.2f}x",
                           "> 1 (faster in parallel)", ratio > 1)])


if __name__ == "__main__":
    main_for(run)
