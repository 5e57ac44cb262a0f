"""Framework overhead: samples/s of a distillation training step through lepton-exp's
Lightning module vs a minimal hand-written PyTorch loop doing the same maths on the same
models and batches.

    python -m benchmarks.overhead --scale smoke|full

Both sides run in this process, in interleaved repeats (common.interleaved); the figure is the
median over repeats of the per-repeat ratio lepton-exp / plain. Before timing, one step from
identical weights on the same batch must give the same loss and the same updated weights on
both sides, so the two really do identical work.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from benchmarks.common import (
    Options,
    Section,
    Target,
    interleaved,
    main_for,
    markdown_table,
    median,
)
from lepton_exp.config.compose import compose_config
from lepton_exp.data.base import DataInfo
from lepton_exp.distill.objective import build_objective
from lepton_exp.models import build_model
from lepton_exp.teachers.load import Teacher
from lepton_exp.training.distill import DistillationModule, bind_objective
from lepton_exp.training.resume import CheckpointOnStop, ExactResume
from lepton_exp.training.timing import TrainTimer

TEACHER, STUDENT = "resnet20", "resnet8"
METHODS = {"KD": "kd", "FitNet+AT": "[fitnet,at]"}  # table row -> distill= option
WANTED = 0.95
# steps: timed steps per variant and repeat; warmup: untimed steps before them, every repeat
# (the first step of a fit allocates the optimiser state). Batch 128 is lepton-exp's CIFAR
# default (conf/data/cifar10.yaml); Lightning's cost is per step, so at 64 it weighs twice as
# much. Smoke only checks that the script works.
SCALES = {"full": dict(batch=128, steps=8, warmup=2, repeats=7),
          "smoke": dict(batch=8, steps=2, warmup=1, repeats=2)}
INFO = DataInfo(num_classes=10, in_chans=3, image_size=32)


class StepTimer(pl.Callback):
    """Seconds from the start of batch `first` to the start of batch `last`: whole loop
    iterations (fetching the batch, the step, Lightning's logging and every hook), none of
    fit's one-off set-up. Also keeps each step's loss."""

    def __init__(self, first: int, last: int):
        self.first, self.last, self.seconds = first, last, float("nan")
        self.losses: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.first:
            self._start = time.perf_counter()
        elif batch_idx == self.last:
            self.seconds = time.perf_counter() - self._start

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"])


def lepton_fit(module: DistillationModule, batches: list, first: int, last: int,
               work_dir: Path) -> StepTimer:
    """One fit over batches[:last + 1] (the step of batch `last` runs, untimed). lepton-exp's
    own per-step callbacks are there as in a run (they never save in so short a fit); its
    checkpoint callbacks, logger and progress bar are not."""
    timer = StepTimer(first, last)
    trainer = pl.Trainer(
        default_root_dir=str(work_dir), accelerator="cpu", devices=1, max_epochs=1,
        max_steps=last + 1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, use_distributed_sampler=False,
        callbacks=[timer, ExactResume(), TrainTimer(),
                   CheckpointOnStop(work_dir / "last.ckpt", 30)])
    # batch_size=None: the loader hands over the pre-made batches, as the plain loop gets them
    trainer.fit(module, train_dataloaders=DataLoader(batches[:last + 1], batch_size=None))
    return timer


def plain_step(student: nn.Module, teacher: nn.Module, connector: nn.Module | None,
               cfg) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The step written by hand: KD (connector None) or FitNet (stage 2) + AT (stages 1-3),
    stage outputs caught by plain forward hooks."""
    student.train()
    teacher.eval()
    params = list(student.parameters()) + (list(connector.parameters()) if connector else [])
    optimizer = torch.optim.SGD(params, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)
    alpha, temp = cfg.distill.alpha, cfg.distill.temperature
    stages: dict[tuple[str, int], torch.Tensor] = {}
    if connector is not None:
        for side, model in (("s", student), ("t", teacher)):
            for i in (1, 2, 3):
                getattr(model, f"layer{i}").register_forward_hook(
                    lambda _m, _in, out, key=(side, i): stages.__setitem__(key, out))

    def attention(feature: torch.Tensor) -> torch.Tensor:  # AT's p = 2, as in the paper's code
        return F.normalize(feature.pow(2).mean(1).flatten(1), dim=1)

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad()
        with torch.no_grad():
            teacher_logits = teacher(x)
        logits = student(x)
        loss = alpha * F.cross_entropy(logits, y)
        if connector is None:
            kl = F.kl_div(F.log_softmax(logits / temp, dim=1),
                          F.softmax(teacher_logits / temp, dim=1), reduction="batchmean")
            loss = loss + (1 - alpha) * (kl * temp ** 2)
        else:
            loss = loss + 100 * F.mse_loss(connector(stages["s", 2]), stages["t", 2])
            loss = loss + 1000 * sum((attention(stages["s", i]) - attention(stages["t", i]))
                                     .pow(2).mean() for i in (1, 2, 3))
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def compare(name: str, distill: str, batches: list, s: dict, work_dir: Path) -> dict:
    cfg = compose_config([f"model={STUDENT}", f"teacher.model.name={TEACHER}",
                          f"distill={distill}", "scheduler=constant", "logger=none"])
    torch.manual_seed(0)
    student = build_model(cfg.model, INFO)
    teacher = Teacher(build_model(cfg.teacher.model, INFO, "teacher.model"), 1.0, {})
    objective = build_objective(cfg.distill)
    bind_objective(objective, student, [teacher], batches[0][0][:2], cfg.distill.layers)
    connector = None
    if "fitnet" in objective.terms:  # the plain loop hard-codes these pairs
        assert objective.terms["fitnet"].pairs == [(2, 2)], objective.terms["fitnet"].pairs
        assert objective.terms["at"].pairs == [(1, 1), (2, 2), (3, 3)]
        connector = objective.terms["fitnet"].connectors[0]
    # Copies before the module hooks the models (deep copies would keep its hooks).
    plain_student, plain_teacher = copy.deepcopy(student), copy.deepcopy(teacher.model)
    plain = plain_step(plain_student, plain_teacher, copy.deepcopy(connector), cfg)
    module = DistillationModule(student, [teacher], objective, INFO, cfg.optim, cfg.scheduler,
                                output_cache=None)  # teacher forward every step

    # Same maths: one step from identical weights on batch 0.
    lepton_loss = lepton_fit(module, batches, 0, 0, work_dir).losses[0]
    plain_loss = plain(*batches[0])
    loss_diff = float((lepton_loss - plain_loss).abs())
    # ... and the same update (lr, weight decay): the student's weights after that step
    weight_diff = max(float((a - b).abs().max()) for a, b in
                      zip(student.state_dict().values(), plain_student.state_dict().values(),
                          strict=True))
    if not torch.allclose(lepton_loss, plain_loss, rtol=1e-5, atol=1e-6) or weight_diff > 1e-5:
        raise AssertionError(f"{name}: lepton-exp loss {float(lepton_loss)} vs plain "
                             f"{float(plain_loss)}, weights differ by {weight_diff:.2e} after "
                             "one step: the two loops do not compute the same thing")

    first, last = s["warmup"], s["warmup"] + s["steps"]
    samples = s["steps"] * len(batches[0][1])

    def run_lepton() -> float:
        return samples / lepton_fit(module, batches, first, last, work_dir).seconds

    def run_plain() -> float:
        for index, (x, y) in enumerate(batches[:last]):
            if index == first:
                start = time.perf_counter()
            plain(x, y)
        return samples / (time.perf_counter() - start)

    rates = interleaved({"plain": run_plain, "lepton": run_lepton}, s["repeats"])
    ratios = [lep / pla for lep, pla in zip(rates["lepton"], rates["plain"], strict=True)]
    return dict(name=name, distill=distill, rates=rates, ratios=ratios, loss_diff=loss_diff,
                weight_diff=weight_diff, loss=float(lepton_loss))


def make_batches(count: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random CIFAR-shaped batches: step time does not depend on pixel values."""
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(batch_size, *INFO.input_shape, generator=generator),
             torch.randint(0, INFO.num_classes, (batch_size,), generator=generator))
            for _ in range(count)]


@contextlib.contextmanager
def quiet():
    """Silences Lightning's per-fit notices and warnings about choices made on purpose here
    (no loader workers, no validation, the frozen teacher in eval mode), until the end."""
    lightning_log = logging.getLogger("pytorch_lightning")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in (r".*does not have many workers", r"Found \d+ module\(s\) in eval mode",
                            r"You defined a `validation_step` but have no",
                            r".*isinstance\(treespec, LeafSpec\)` is deprecated"):
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        lightning_log.setLevel(level)


def run(options: Options) -> Section:
    started = time.perf_counter()
    s = SCALES[options.scale]
    batches = make_batches(s["warmup"] + s["steps"] + 1, s["batch"])
    load = [os.getloadavg()[0]]
    with quiet():
        results = [compare(name, distill, batches, s, options.work_dir / "overhead")
                   for name, distill in METHODS.items()]
    load.append(os.getloadavg()[0])

    rows, targets = [], []
    for r in results:
        ratio = median(r["ratios"])
        rows.append([f"{r['name']} (`distill={r['distill']}`)",
                     f"{median(r['rates']['plain']):.0f}", f"{median(r['rates']['lepton']):.0f}",
                     f"**{ratio:.3f}**",
                     f"{min(r['ratios']):.3f}–{max(r['ratios']):.3f}", f"≥ {WANTED}"])
        targets.append(Target(f"framework overhead, {r['name']} step (lepton-exp / plain "
                              "PyTorch samples/s)", f"{ratio:.3f}", f"≥ {WANTED}",
                              ratio >= WANTED))
    losses = ", ".join(f"{r['loss_diff']:.1e} ({r['name']}, loss {r['loss']:.4f})"
                       for r in results)
    weights = ", ".join(f"{r['weight_diff']:.1e} ({r['name']})" for r in results)
    body = "\n".join([
        f"Teacher `{TEACHER}`, student `{STUDENT}` (lepton-exp's `build_model`), batches of "
        f"{s['batch']} random 3x32x32 tensors (speed does not depend on pixel values), "
        f"{torch.get_num_threads()} torch threads, SGD of `optim=sgd` at a constant lr, "
        "teacher forward every step (no teacher-output cache). **lepton-exp**: "
        "`DistillationModule` with `build_objective` of the composed config, fitted by a "
        "`pl.Trainer` (no logger, checkpoints, progress bar, validation or model summary). "
        "**Plain**: a hand-written loop on deep copies of the same initial weights (and "
        "FitNet connector), `torch.nn.functional` losses, forward hooks for stage outputs. "
        f"Timed: {s['steps']} whole loop iterations (batch fetch, step, logging, hooks) "
        f"after {s['warmup']} untimed ones, per variant and repeat, fit's set-up excluded; "
        f"{s['repeats']} interleaved repeats; ratio = median of the repeats' lepton-exp / "
        "plain samples/s.",
        "",
        markdown_table(["step", "plain PyTorch samples/s", "lepton-exp samples/s",
                        "ratio (median of repeats)", "min–max ratio", "target"], rows),
        "",
        f"Same maths (asserted before timing): one step from identical weights on the same "
        f"batch, losses agree to {losses}; the student's weights after it to {weights}. "
        f"Load average (1 min) at the start and end: {load[0]:.1f} / {load[1]:.1f} on "
        f"{os.cpu_count()} cores (other processes slow both sides alike only on average: "
        "hence interleaving and the median).",
        "",
        f"Command: `python -m benchmarks.overhead --scale {options.scale}` (whole suite: "
        "`python -m benchmarks`).",
    ])
    return Section(key="overhead", title="Framework overhead vs plain PyTorch", body=body,
                   targets=targets, seconds=time.perf_counter() - started)


if __name__ == "__main__":
    main_for(run)
