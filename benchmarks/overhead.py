"""Framework cost, end to end: `lepton-exp` runs started as a user starts them (its callbacks,
checkpoints, W&B offline logger and progress bar) against a plain PyTorch loop that trains
the same model on the same batches (the run's own data pipeline: same loader, sampler and
transforms), interleaved; and the time from the command to its first training step against
importing Lightning and timm alone.

    python -m benchmarks.overhead --scale smoke|full

Per repeat, both sides train a few epochs, the first left out. CIFAR-10: the command in its
own process; an epoch's time runs from its start to its last step (the loading of its batches
included, validation and checkpoints left out: the record's `timing.epoch_s`, and the same
span by hand). Digits, the framework's cost a step, at 1 torch thread: a fresh process runs
the command through its entry point (`lepton_exp.cli.main`, the same argv) with one epoch of
the plain loop just before each of its epochs, then Lightning alone (a minimal LightningModule
and Trainer: Lightning's own floor) the same way; the cost is the median over epochs of the
difference of the two epochs' median whole steps, since this machine's slow spells move a step by
1-5 ms from one run to the next, more than the cost sought. Figures: the median over
repeats, with min-max.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

from benchmarks.common import (
    REPO,
    Options,
    Section,
    Target,
    interleaved,
    main_for,
    markdown_table,
    median,
)

# The tiny probe runs at one torch thread: the framework's cost is Python work on one core,
# and a 2-thread step on 2 cores slows whenever any other process (W&B's service, the
# machine's own) wakes, a noise of several ms that hides a 1 ms difference.
COST_THREADS = 1
# probe -> (what it is, the run's overrides); both teacher-stage runs (supervised training)
PROBES = {
    "tiny": ("digits 8×8, resnet8, batch 64, 1 thread (where the framework's own cost shows)",
             ["stage=teacher", "data=digits", "model=resnet8", f"threads={COST_THREADS}"]),
    "cifar": ("CIFAR-10, 5,000 training images, crop + flip, resnet8, batch 128",
              ["stage=teacher", "data=cifar10", "data.train_subset=5000", "model=resnet8",
               "data.batch_size=128"]),
}
SCALES = {"full": dict(repeats={"cifar": 7, "tiny": 11}, epochs={"tiny": 9, "cifar": 3},
                      subset=None),
          "smoke": dict(repeats={"cifar": 1, "tiny": 1}, epochs={"tiny": 2, "cifar": 2},
                        subset=600)}
COST_WANTED, RATIO_WANTED, START_WANTED = 1.0, 0.95, 1.5


def _overrides(probe: str, options: Options, epochs: int) -> list[str]:
    overrides = [*PROBES[probe][1], f"trainer.max_epochs={epochs}"]
    subset = SCALES[options.scale]["subset"]
    if subset and probe == "cifar":
        overrides.append(f"data.train_subset={subset}")
    return overrides


def _run_env(probe: str, options: Options) -> dict[str, str]:
    return {"LEPTON_DATA_DIR": str(options.data_dir), "WANDB_MODE": "offline",
            "LEPTON_OUTPUT_DIR": str(options.work_dir / "overhead" / probe)}


def _newest_record(probe: str, options: Options) -> dict:
    out = Path(_run_env(probe, options)["LEPTON_OUTPUT_DIR"])
    newest = max(glob.glob(str(out / "runs" / "*" / "*" / "summary.json")), key=os.path.getmtime)
    return json.loads(Path(newest).read_text())


def framework_run(probe: str, options: Options, epochs: int) -> dict:
    """One `lepton-exp` command, defaults as a user gets them; its record's epoch times."""
    command = [sys.executable, "-m", "lepton_exp", *_overrides(probe, options, epochs),
               "resume=false"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env={**os.environ, **_run_env(probe, options)},
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    record = _newest_record(probe, options)
    steps = record["metrics"]["global_step"] // epochs
    return {"step_ms": [s / steps * 1000 for s in record["timing"]["epoch_s"][1:]],
            "median_step_ms": record["timing"]["step_ms"],
            "first_step_s": record["timing"]["first_step_s"], "wall_s": wall,
            "samples_per_step": record["timing"]["train_samples"] / (steps * epochs)}


def framework_run_in_process(probe: str, options: Options, epochs: int) -> dict:
    """The same command through its entry point in this process (``lepton_exp.cli.main``
    with the command's argv, as the basic launcher runs a sweep's jobs), with a plain-loop
    epoch before each of its training epochs (``PlainEpochsBeside``, added to the run's
    callbacks); per epoch after the first, each side's median whole step (ms). Meant for a
    process of its own (``paired_process``): the command leaves its process settings behind
    (deterministic algorithms, torch threads, stop-signal handlers, logging)."""
    from lepton_exp.cli import main
    from lepton_exp.training import trainer as trainer_module

    beside = plain_epochs_beside(probe, options, epochs)
    build_trainer = trainer_module.build_trainer

    def with_beside(*args, callbacks=(), **kwargs):
        return build_trainer(*args, callbacks=[beside, *callbacks], **kwargs)

    argv = sys.argv
    sys.argv = ["lepton-exp", *_overrides(probe, options, epochs), "resume=false"]
    trainer_module.build_trainer = with_beside
    printed, errors = io.StringIO(), io.StringIO()
    try:
        with mock.patch.dict(os.environ, _run_env(probe, options)), \
                contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
            main()
    except SystemExit as stop:
        if stop.code:  # (a config error's message is the exit's own)
            said = stop.code if isinstance(stop.code, str) else errors.getvalue()[-2000:]
            raise RuntimeError(f"{' '.join(sys.argv)} failed:\n{said}") from None
    finally:
        sys.argv = argv
        trainer_module.build_trainer = build_trainer
    return {"step_ms": beside.run_ms, "plain_ms": beside.plain_ms}


def plain_epochs_beside(probe: str, options: Options, epochs: int):
    """A callback that runs one epoch of ``PlainLoop`` just before each training epoch of
    the fit it joins (before the run's timer starts the epoch's span): both sides' epochs
    alternate within a second, so the machine's slow spells, which last seconds and move a
    step by 1-5 ms here, hit both alike. The plain epochs run in PyTorch's default mode and
    on their own RNG state: the run's randomness is untouched."""
    import pytorch_lightning as pl

    from lepton_exp.training.timing import TrainTimer

    class PlainEpochsBeside(pl.Callback):
        def __init__(self) -> None:
            self.loop: PlainLoop | None = None
            self.timer: TrainTimer | None = None
            self.run_ms: list[float] = []  # per epoch after the first: median whole step
            self._first = 0  # the epoch's first iteration in the timer's list

        @property
        def plain_ms(self) -> list[float]:
            return [median(epoch) for epoch in self.loop.epoch_iterations[1:]]

        def on_fit_start(self, trainer, pl_module) -> None:
            self.timer = next(c for c in trainer.callbacks if isinstance(c, TrainTimer))
            if trainer.callbacks.index(self) > trainer.callbacks.index(self.timer):
                raise RuntimeError("the plain epochs would fall inside the run's epoch spans")
            with torch.random.fork_rng(devices=[]):
                self.loop = PlainLoop(probe, options, epochs)

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            with torch_settings(deterministic=False), torch.random.fork_rng(devices=[]):
                self.loop.epoch(trainer.current_epoch)
            self._first = len(self.timer.step_seconds)

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            # (the timer keeps whole iterations from the second epoch on)
            epoch = self.timer.step_seconds[self._first:]
            if epoch:
                self.run_ms.append(median(epoch) * 1000)

    return PlainEpochsBeside()


def bare_lightning_run(probe: str, options: Options, epochs: int) -> dict:
    """Lightning's own floor: the plain loop's model, optimiser, lr schedule and training
    loader (a ``PlainLoop`` of its own) in a minimal LightningModule (training_step =
    forward + cross-entropy), fitted by a Trainer without loggers, checkpoints, progress
    bar, model summary, validation or metrics; its epochs timed by the record's own timer
    (``TrainTimer``), with a plain-loop epoch before each (``PlainEpochsBeside``)."""
    import pytorch_lightning as pl

    from lepton_exp.training.timing import TrainTimer

    loop = PlainLoop(probe, options, epochs)

    class Bare(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = loop.model

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.model(batch[0]), batch[1])

        def configure_optimizers(self):
            return ({"optimizer": loop.optimizer, "lr_scheduler": loop.schedule}
                    if loop.schedule else loop.optimizer)

    timer, beside = TrainTimer(), plain_epochs_beside(probe, options, epochs)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=[beside, timer])
    # in PyTorch's default mode, as in a fresh process (see paired_steps)
    with torch_settings(threads=loop.cfg.threads, deterministic=False):
        trainer.fit(Bare(), train_dataloaders=loop.loader)
    return {"step_ms": beside.run_ms, "plain_ms": beside.plain_ms}


@contextlib.contextmanager
def torch_settings(threads: int | None = None, deterministic: bool | None = None):
    """torch's threads and deterministic mode for the block (None: as they are), then
    both as they were."""
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    if threads:
        torch.set_num_threads(threads)
    if deterministic is not None:
        torch.use_deterministic_algorithms(deterministic)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])


# in a paired process: lepton-exp and Lightning alone, each with the plain loop beside it (the
# order is reversed every other repeat)
PAIRED_ORDER = ("lepton", "bare")


def paired_steps(options: Options, epochs: int, reverse: bool = False) -> dict[str, dict]:
    """The tiny probe's runs in one process: each timed epoch's time a step (ms) of
    lepton-exp and of Lightning alone, each with the plain loop's epoch before it. (Lightning
    alone runs in PyTorch's default mode, as in a fresh process: the lepton-exp run before
    it leaves deterministic algorithms on.)"""
    runs = {"lepton": framework_run_in_process, "bare": bare_lightning_run}
    order = PAIRED_ORDER[::-1] if reverse else PAIRED_ORDER
    return {side: runs[side]("tiny", options, epochs) for side in order}


def paired_process(options: Options, epochs: int, reverse: bool = False) -> dict[str, dict]:
    """``paired_steps`` in a fresh Python process (a repeat: its own process)."""
    code = ("import json, sys; from pathlib import Path; "
            "from benchmarks.common import Options; from benchmarks.overhead import paired_steps; "
            "print(json.dumps(paired_steps(Options(sys.argv[1], Path(sys.argv[2]), "
            "Path(sys.argv[3])), int(sys.argv[4]), sys.argv[5] == 'reverse')))")
    done = subprocess.run([sys.executable, "-c", code, options.scale, str(options.data_dir),
                           str(options.work_dir), str(epochs),
                           "reverse" if reverse else "forward"], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the paired tiny probe failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def plain_run(probe: str, options: Options, epochs: int, per_sample: bool = False) -> dict:
    """``PlainLoop`` for ``epochs``: each timed epoch's time a step, and the median whole
    iteration (ms); at the run's ``threads``."""
    loop = PlainLoop(probe, options, epochs, per_sample)
    with torch_settings(threads=loop.cfg.threads):  # the run's own setting
        step_ms = [loop.epoch(epoch) for epoch in range(epochs)][1:]
    return {"step_ms": step_ms, "median_step_ms": median(loop.iterations)}


class PlainLoop:
    """The same training by hand: the run's config composed, its data module's training
    loader (or, ``per_sample``, a loader applying torchvision's v2 transforms per sample,
    as a hand-written script would), the same model, optimiser and lr schedule, and a
    loop of forward, cross-entropy, backward, step; run an epoch at a time."""

    def __init__(self, probe: str, options: Options, epochs: int, per_sample: bool = False):
        from torch.utils.data import DataLoader, Dataset, RandomSampler

        from lepton_exp.config.compose import compose_config
        from lepton_exp.data import build_datamodule
        from lepton_exp.models import build_model
        from lepton_exp.training.optim import build_optimizer, build_scheduler

        os.environ["LEPTON_DATA_DIR"] = str(options.data_dir)
        self.cfg = cfg = compose_config(_overrides(probe, options, epochs))
        torch.manual_seed(cfg.seed)
        datamodule = build_datamodule(cfg.data)
        datamodule.setup()
        if per_sample:
            pipeline = datamodule.train_transform()

            class PerSample(Dataset):
                def __len__(self):
                    return len(datamodule.train)

                def __getitem__(self, index):
                    return (pipeline(datamodule.train.images[index]),
                            datamodule.train.labels[index])

            dataset = PerSample()
            self.loader = DataLoader(dataset, batch_size=cfg.data.batch_size, drop_last=True,
                                     sampler=RandomSampler(dataset, generator=torch.Generator()))
        else:
            self.loader = datamodule.train_dataloader()
        self.model = build_model(cfg.model, datamodule.info).train()
        self.optimizer = build_optimizer(self.model.parameters(), cfg.optim)
        # (Lightning's form: the scheduler and its interval)
        self.schedule = build_scheduler(self.optimizer, cfg.scheduler, epochs, len(self.loader))
        self.scheduler = self.schedule["scheduler"] if self.schedule else None
        self.iterations: list[float] = []  # whole iterations (ms) after the first epoch
        self.epoch_iterations: list[list[float]] = []  # each epoch's whole iterations (ms)

    def epoch(self, epoch: int) -> float:
        """One epoch; its time a step (ms), from its start (its first batch's loading
        included, as the record's span) to its last step."""
        loader, model, optimizer = self.loader, self.model, self.optimizer
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        started, steps, iterations = time.perf_counter(), 0, []
        self.epoch_iterations.append(iterations)
        batches = iter(loader)
        inputs, labels = next(batches)[:2]
        batch_started = time.perf_counter()
        while True:
            if steps:  # one whole iteration: load, step (the record's step_ms)
                now = time.perf_counter()
                iterations.append((now - batch_started) * 1000)
                if epoch:
                    self.iterations.append(iterations[-1])
                batch_started = now
            optimizer.zero_grad()
            loss = F.cross_entropy(model(inputs), labels)
            loss.backward()
            optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            steps += 1
            batch = next(batches, None)
            if batch is None:
                break
            inputs, labels = batch[:2]
        return (time.perf_counter() - started) / steps * 1000


def import_seconds() -> float:
    """Wall time of a Python process that only imports Lightning and timm."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import pytorch_lightning, timm"], check=True)
    return time.perf_counter() - started


def config_error_seconds() -> float:
    """Wall time of a command that fails its config check (a misspelt value)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lepton_exp", "trainer.max_epochs=abc"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode != 0, "the misspelt config was accepted"
    return time.perf_counter() - started


def _spread(values: list[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f}–{max(values):.{digits}f}"


def measure(options: Options) -> dict[str, dict[str, list]]:
    """Both probes' runs, each probe's variants interleaved."""
    s = SCALES[options.scale]
    cifar, tiny = s["epochs"]["cifar"], s["epochs"]["tiny"]
    flips = itertools.cycle((False, True))  # the paired processes' order, every other repeat
    return {
        "cifar": interleaved({"lepton": lambda: framework_run("cifar", options, cifar),
                              "plain": lambda: plain_run("cifar", options, cifar),
                              "per_sample": lambda: plain_run("cifar", options, cifar, True)},
                             s["repeats"]["cifar"]),
        "tiny": interleaved({"lepton": lambda: framework_run("tiny", options, tiny),
                             "plain": lambda: plain_run("tiny", options, tiny),
                             "paired": lambda: paired_process(options, tiny,
                                                              reverse=next(flips)),
                             "imports": lambda: {"seconds": import_seconds()},
                             "config_error": lambda: {"seconds": config_error_seconds()}},
                            s["repeats"]["tiny"]),
    }


def run(options: Options) -> Section:
    started = time.perf_counter()
    from lepton_exp.training.parallel import default_threads

    threads = default_threads()
    torch.set_num_threads(threads)
    s = SCALES[options.scale]
    load = [os.getloadavg()[0]]
    runs = measure(options)
    load.append(os.getloadavg()[0])

    def per_repeat(probe: str, side: str, key: str = "step_ms") -> list[float]:
        """Per repeat: the median epoch's time a step, or the median whole iteration."""
        return [median(r[key]) if key == "step_ms" else r[key] for r in runs[probe][side]]

    # the cost: per paired process, the median over its epochs of a lepton-exp epoch's median
    # whole step minus that of the plain-loop epoch run just before it
    paired = runs["tiny"]["paired"]

    def gaps(side: str) -> list[float]:
        return [median(a - p for a, p in zip(r[side]["step_ms"], r[side]["plain_ms"],
                                              strict=True)) for r in paired]

    def steps(side: str, key: str = "step_ms") -> list[float]:
        return [median(r[side][key]) for r in paired]

    tiny_lepton, tiny_plain = steps("lepton"), steps("lepton", "plain_ms")
    costs = gaps("lepton")
    # lepton-exp / plain samples/s, from the same pairs as the cost
    pair_ratios = [median(p / a for a, p in zip(r["lepton"]["step_ms"], r["lepton"]["plain_ms"],
                                                 strict=True)) for r in paired]
    plain_range = [ms for r in paired for side in PAIRED_ORDER for ms in r[side]["plain_ms"]]
    floor = {"bare": steps("bare"), "bare_plain": steps("bare", "plain_ms"),
             "bare_gaps": gaps("bare")}
    # as measured before: each command in its own process, the plain loop in this one
    apart = [a - b for a, b in zip(per_repeat("tiny", "lepton", "median_step_ms"),
                                   per_repeat("tiny", "plain", "median_step_ms"), strict=True)]
    cifar_lepton, cifar_plain = per_repeat("cifar", "lepton"), per_repeat("cifar", "plain")
    ratios = [p / a for a, p in zip(cifar_lepton, cifar_plain, strict=True)]
    first = [r["first_step_s"] for r in runs["tiny"]["lepton"]]
    imports = [r["seconds"] for r in runs["tiny"]["imports"]]
    start_gaps = [f - i for f, i in zip(first, imports, strict=True)]
    figures = dict(cost=median(costs), costs=costs, apart=apart, floor=floor,
                   pair_ratios=pair_ratios, plain_range=plain_range,
                   ratio=median(ratios),
                   ratios=ratios,
                   tiny_lepton=tiny_lepton, tiny_plain=tiny_plain, cifar_lepton=cifar_lepton,
                   cifar_plain=cifar_plain, per_sample=per_repeat("cifar", "per_sample"),
                   first=first, imports=imports, start_gaps=start_gaps, gap=median(start_gaps),
                   config_errors=[r["seconds"] for r in runs["tiny"]["config_error"]],
                   samples={p: runs[p]["lepton"][0]["samples_per_step"] for p in PROBES},
                   threads=threads, load=load, scale=s)
    return Section(key="overhead", title="Framework cost vs a plain PyTorch loop, end to end",
                   body=_body(options, figures), targets=_targets(figures),
                   seconds=time.perf_counter() - started)


def _targets(f: dict) -> list[Target]:
    config_error = median(f["config_errors"])
    return [
        Target("framework cost per step, tiny inputs (lepton-exp − plain loop, ms)",
               f"{f['cost']:+.2f}", f"≤ {COST_WANTED}", f["cost"] <= COST_WANTED),
        Target("CIFAR-10 end to end, lepton-exp / plain loop samples/s (same data pipeline)",
               f"{f['ratio']:.3f}", f"≥ {RATIO_WANTED}", f["ratio"] >= RATIO_WANTED),
        Target("command to first training step − `import pytorch_lightning, timm` (digits, s)",
               f"{f['gap']:.2f}", f"≤ {START_WANTED}", f["gap"] <= START_WANTED),
        Target("a config error's wall time (s)", f"{config_error:.2f}", "< 1",
               config_error < 1),
    ]


def _floor_table(f: dict) -> str:
    floor = f["floor"]
    rows = [["median whole step (median epoch), ms", f"{median(f['tiny_plain']):.2f}",
             f"{median(floor['bare']):.2f}", f"{median(f['tiny_lepton']):.2f}"],
            ["the plain loop beside it, ms", "", f"{median(floor['bare_plain']):.2f}",
             f"{median(f['tiny_plain']):.2f}"],
            ["above the plain loop beside it, ms", "",
             f"{median(floor['bare_gaps']):+.2f} ({_spread(floor['bare_gaps'])})",
             f"**{median(f['costs']):+.2f}** ({_spread(f['costs'])})"]]
    return markdown_table(["digits, 1 thread", "plain loop", "Lightning alone", "lepton-exp"],
                          rows)


def _body(options: Options, f: dict) -> str:
    s, cost, ratio = f["scale"], f["cost"], f["ratio"]
    lepton, plain = f["cifar_lepton"], f["cifar_plain"]
    rows = [
        [PROBES["tiny"][0], f"{median(f['tiny_plain']):.2f}", f"{median(f['tiny_lepton']):.2f}",
         f"**{cost:+.2f} ms** ({_spread(f['costs'])})",
         f"{median(f['pair_ratios']):.3f}",
         f"≤ {COST_WANTED} ms a step"],
        [PROBES["cifar"][0], f"{median(plain):.1f}", f"{median(lepton):.1f}",
         f"{median(a - p for a, p in zip(lepton, plain)):+.1f} ms",
         f"**{ratio:.3f}** ({_spread(f['ratios'], 3)})", f"≥ {RATIO_WANTED}"],
    ]
    commands = "; ".join(f"`lepton-exp {' '.join(_overrides(p, options, s['epochs'][p]))}`"
                         for p in PROBES)
    per_sample = f["per_sample"]
    return "\n".join([
        f"**lepton-exp**: the command as a user runs it ({commands}; defaults: W&B offline, "
        "the progress bar, checkpoints, validation every epoch). **Plain loop**: this process "
        "composes the same config and trains the same model from the run's own training "
        "loader (same sampler, seeded augmentation and batch transforms), with the same "
        "optimiser and lr schedule: forward, cross-entropy, backward, step, no logging, in "
        "PyTorch's default mode (lepton-exp: deterministic algorithms, `trainer.deterministic`, "
        "without their NaN fill of new tensors, `trainer.fill_uninitialized_memory=false`, "
        "which cost ~5 % of a CIFAR step). The first epoch left out on both sides.",
        "",
        f"- **Digits (framework cost a step)**: {s['repeats']['tiny']} repeats, each a fresh "
        f"process at {COST_THREADS} torch thread that runs the command through its own entry "
        "point (`lepton_exp.cli.main` with the command's arguments) with one epoch of the "
        "plain loop just before each of its training epochs (a callback added to the run's "
        "own; the plain epochs run in PyTorch's default mode, on their own RNG state), then "
        "Lightning alone (below) the same way. Per epoch, each side's median whole loop "
        "iteration (batch start to the next one's: loading, step, hooks; the record's "
        "`timing.step_ms` is the same over a run); per repeat, the median over the epochs "
        "after the first of (lepton-exp's - the plain epoch's before it). Why epoch pairs: "
        "this machine has slow spells of seconds that move a step's time by 1-5 ms from one "
        "run or process to the next (this run's plain-loop epochs: "
        f"{_spread(f['plain_range'], 1)} ms a step), more than the "
        "cost sought; two epochs a second apart share them. "
        f"`threads={COST_THREADS}`: the framework's cost is Python work on one core; at 2 "
        "threads on 2 cores any other process's wake-up costs a step several ms.",
        f"- **CIFAR-10 (samples/s)**: {s['repeats']['cifar']} interleaved repeats at "
        f"{f['threads']} torch threads (the default); per repeat, an epoch from its start to "
        "its last step (batch loading included, validation and checkpoints left out; the "
        "record's `timing.epoch_s`).",
        "- Median (min–max) over the repeats. The digits row's ms/step are each side's own "
        "median; its cost and samples/s ratio are the medians of the per-epoch pairs (so the "
        "cost is not the difference of the two ms/step columns).",
        "",
        markdown_table(["probe", "plain loop ms/step", "lepton-exp ms/step",
                        "framework cost a step", "lepton-exp / plain samples/s", "target"],
                       rows),
        "",
        "Where the cost lies, from the same processes: Lightning alone (the plain loop's "
        "model, optimiser, schedule and loader in a minimal LightningModule, fitted without "
        "loggers, checkpoints, progress bar, summary, validation or metrics), with the plain "
        "loop beside it the same way: the floor any tool built on Lightning's Trainer starts "
        "from.",
        "",
        _floor_table(f),
        "",
        "Measured apart instead (each command in its own process, started as a user starts "
        "it, against the plain loop in the benchmark's process), the same cost reads "
        f"{median(f['apart']):+.2f} ms ({_spread(f['apart'])}): the spread of two processes' "
        "speeds.",
        "",
        f"Samples a step: {f['samples']['tiny']:.0f} (digits), {f['samples']['cifar']:.0f} "
        "(CIFAR). For reference, a hand-written loop over a torchvision v2 per-sample loader "
        "(crop + flip + normalise per image, 0 workers: what a script usually does) takes "
        f"{median(per_sample):.1f} ms a CIFAR step ({_spread(per_sample, 1)}): lepton-exp's "
        f"batch transforms make its CIFAR step {median(per_sample) / median(lepton):.2f}x "
        "as fast as that.",
        "",
        "Start-up (digits): "
        f"command to first training step {median(f['first']):.2f} s ({_spread(f['first'])}), "
        "a process importing only `pytorch_lightning` and `timm` "
        f"{median(f['imports']):.2f} s ({_spread(f['imports'])}): **{f['gap']:+.2f} s** beyond "
        f"those imports ({_spread(f['start_gaps'])}; target ≤ {START_WANTED} s). A config "
        f"error (`lepton-exp trainer.max_epochs=abc`) ends in "
        f"{median(f['config_errors']):.2f} s ({_spread(f['config_errors'])}).",
        "",
        f"Load average (1 min) at the start and end: {f['load'][0]:.1f} / {f['load'][1]:.1f} "
        f"on {os.cpu_count()} cores.",
        "",
        f"Command: `python -m benchmarks.overhead --scale {options.scale}` (whole suite: "
        "`python -m benchmarks`).",
    ])


if __name__ == "__main__":
    main_for(run)
