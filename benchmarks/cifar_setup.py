"""The CIFAR-10 setting shared by the distillation, pruning and peer sections: one data
subset, one teacher (trained once, with augmentation and more epochs than the students, so
it is clearly better than a student alone), one student schedule.

The teacher is a normal `stage=teacher` run; students load its exported weights through
`teacher.checkpoint`, so every student of every section distils from the same weights.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import Options, command_text, records, run_cli

# scale -> settings. Students train without augmentation: their inputs are then the same
# every epoch and the teacher's outputs are computed once (the teacher-output cache).
SCALES = {
    "full": dict(train_subset=5000, val_subset=1000, test_subset=None, teacher="resnet20",
                 teacher_epochs=30, student="resnet8", student_epochs=15, seeds=[0, 1, 2]),
    "smoke": dict(train_subset=500, val_subset=200, test_subset=500, teacher="resnet20",
                  teacher_epochs=2, student="resnet8", student_epochs=1, seeds=[0, 1]),
}


def settings(options: Options) -> dict:
    return SCALES[options.scale]


def data_overrides(options: Options) -> list[str]:
    s = settings(options)
    test = "null" if s["test_subset"] is None else s["test_subset"]
    return ["data=cifar10", f"data.train_subset={s['train_subset']}",
            f"data.val_subset={s['val_subset']}", f"data.test_subset={test}"]


def teacher_overrides(options: Options) -> list[str]:
    s = settings(options)
    return ["stage=teacher", *data_overrides(options), "data.augment=true",
            f"model={s['teacher']}", f"trainer.max_epochs={s['teacher_epochs']}",
            "logger=csv", f"hydra.run.dir={options.work_dir / 'cifar_teacher'}"]


def teacher(options: Options) -> dict:
    """The teacher's run record (trained on first use; a finished run is reused)."""
    run_dir = options.work_dir / "cifar_teacher"
    done = records(run_dir)
    if not done:
        run_cli(teacher_overrides(options), options, "cifar_teacher")
        done = records(run_dir)
    record = done[0]
    record["command"] = command_text(teacher_overrides(options))
    return record


def teacher_weights(options: Options) -> Path:
    return Path(teacher(options)["exported"])


def student_overrides(options: Options, weights: Path) -> list[str]:
    """A student distilled from the shared teacher (add distill=..., seed=...)."""
    s = settings(options)
    return ["stage=distill", *data_overrides(options), "data.augment=false",
            f"model={s['student']}", f"teacher.model.name={s['teacher']}",
            f"teacher.checkpoint={weights}", f"trainer.max_epochs={s['student_epochs']}"]
