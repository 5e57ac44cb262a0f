"""Epoch time of KD + AT distillation with and without the teacher-output cache.

    python -m benchmarks.teacher_output_cache --scale full     (whole suite: python -m benchmarks)

CIFAR-10 (a stratified training subset, no augmentation, so the cache is valid), a resnet56
teacher and a resnet8 student. Only speed is measured, so the teacher keeps its random
initialisation (its cost per forward does not depend on its weights). Both variants run in
this process, alternating, and the ratio of median epoch times (epochs after the first,
which fills the cache) is reported.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl

from benchmarks.common import Options, Section, Target, interleaved, main_for, median
from lepton_exp.config.compose import compose_config
from lepton_exp.data import build_datamodule
from lepton_exp.distill.objective import build_objective
from lepton_exp.models import build_model
from lepton_exp.teachers.load import Teacher
from lepton_exp.training.distill import DistillationModule, bind_objective, teacher_output_cache


class EpochTimer(pl.Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.times.append(time.perf_counter() - self._start)


SCALES = {"full": dict(train_subset=5000, epochs=3, repeats=2),
          "smoke": dict(train_subset=256, epochs=2, repeats=1)}


def compose(data_root: str, train_subset: int, cache: bool):
    return compose_config([
        "data=cifar10", f"data.root={data_root}", f"data.train_subset={train_subset}",
        "data.augment=false", "model=resnet8", "teacher.model.name=resnet56",
        "distill=kd_at", f"distill.cache_teacher_outputs={str(cache).lower()}"])


def epoch_times(cfg, epochs: int) -> list[float]:
    pl.seed_everything(0, verbose=False)
    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    info = datamodule.info
    teacher = Teacher(build_model(cfg.teacher.model, info), 1.0, {})
    student = build_model(cfg.model, info)
    objective = build_objective(cfg.distill)
    taps = bind_objective(objective, student, [teacher], datamodule.example_batch(),
                          cfg.distill.layers)
    cache, _ = teacher_output_cache(cfg, datamodule, objective, taps)
    module = DistillationModule(student, [teacher], objective, info, cfg.optim, cfg.scheduler,
                                output_cache=cache)
    timer = EpochTimer()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, callbacks=[timer])
    trainer.fit(module, datamodule=datamodule)
    return timer.times


def run(options: Options) -> Section:
    s = SCALES[options.scale]
    root = str(options.data_dir / "cifar10")
    first: dict[str, list[float]] = {"forward": [], "cache": []}

    def variant(cache: bool):
        def measure() -> list[float]:
            times = epoch_times(compose(root, s["train_subset"], cache), s["epochs"])
            first["cache" if cache else "forward"].append(times[0])
            return times[1:]
        return measure

    later = interleaved({"forward": variant(False), "cache": variant(True)}, s["repeats"])
    without = median(t for times in later["forward"] for t in times)
    with_cache = median(t for times in later["cache"] for t in times)
    ratio = without / with_cache
    body = (
        f"Setup: CIFAR-10, {s['train_subset']} training images (no augmentation), batch 128, "
        "`distill=kd_at` (KD + attention transfer on 3 stage pairs), resnet56 teacher -> "
        "resnet8 student, in one process. Median epoch time over the epochs after the first "
        f"(the first fills the cache), {s['repeats']} alternating repeats of {s['epochs']} "
        "epochs per variant.\n\n"
        "| variant | first epoch (s) | later epochs, median (s) |\n| --- | ---: | ---: |\n"
        f"| teacher forward every step | {median(first['forward']):.2f} | {without:.2f} |\n"
        f"| teacher-output cache | {median(first['cache']):.2f} | {with_cache:.2f} |\n\n"
        f"**Epoch-time ratio (without / with the cache): {ratio:.2f}x.**\n\n"
        f"Command: `python -m benchmarks.teacher_output_cache --scale {options.scale}`")
    return Section("cache", "Teacher-output cache", body,
                   [Target("teacher-output cache: epoch time without / with", f"{ratio:.2f}x",
                           "> 1 (faster with it)", ratio > 1)])


if __name__ == "__main__":
    main_for(run)
