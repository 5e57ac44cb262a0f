"""Epoch time of KD + AT distillation with and without the teacher-output cache.

    python benchmarks/teacher_output_cache.py [--data-root ../shared/data/cifar10]

CIFAR-10 (a stratified training subset, no augmentation, so the cache is valid), a resnet56
teacher and a resnet8 student. Only speed is measured, so the teacher keeps its random
initialisation (its cost per forward does not depend on its weights). Both variants run in
this process, alternating, and the ratio of median epoch times (epochs after the first,
which fills the cache) is written to results/teacher_output_cache.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from lepton_exp.config import CONF_DIR
from lepton_exp.data import build_datamodule
from lepton_exp.distill.objective import build_objective
from lepton_exp.models import build_model
from lepton_exp.stages.distill import DistillationModule, bind_objective, teacher_output_cache
from lepton_exp.stages.artifacts import Teacher

REPO = Path(__file__).resolve().parent.parent


class EpochTimer(pl.Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.times.append(time.perf_counter() - self._start)


def compose(data_root: str, train_subset: int, cache: bool):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=[
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared/data/cifar10"))
    parser.add_argument("--train-subset", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "results/teacher_output_cache.md"))
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    times: dict[bool, list[float]] = {True: [], False: []}
    first: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeats):
        for cache in (False, True):  # alternating, so drift hits both alike
            measured = epoch_times(compose(args.data_root, args.train_subset, cache),
                                   args.epochs)
            first[cache].append(measured[0])
            times[cache] += measured[1:]
    without, with_cache = statistics.median(times[False]), statistics.median(times[True])
    lines = [
        "# Teacher-output cache: epoch time with and without it",
        "",
        f"Command: `python benchmarks/teacher_output_cache.py --train-subset {args.train_subset}"
        f" --epochs {args.epochs} --repeats {args.repeats}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, no GPU. "
        f"Date: {time.strftime('%Y-%m-%d')}.",
        "",
        f"Setup: CIFAR-10, {args.train_subset} training images (no augmentation), batch 128, "
        "`distill=kd_at` (KD + attention transfer on 3 stage pairs), resnet56 teacher -> "
        "resnet8 student, CPU. Median over the epochs after the first (the first fills "
        f"the cache), {args.repeats} alternating repeats of {args.epochs} epochs per variant.",
        "",
        "| variant | first epoch (s) | later epochs, median (s) |",
        "| --- | ---: | ---: |",
        f"| teacher forward every step | {statistics.median(first[False]):.2f} | "
        f"{without:.2f} |",
        f"| teacher-output cache | {statistics.median(first[True]):.2f} | {with_cache:.2f} |",
        "",
        f"**Speed-up of later epochs: {without / with_cache:.2f}x** "
        f"(ratio of medians: {without:.2f} s / {with_cache:.2f} s).",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
