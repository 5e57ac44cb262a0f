"""Pruning then finetuning (the prune stage's work): a trained dense model is pruned by the
configured method (its entry in lepton_exp/prune/methods), finetuned with the distillation
module (plain cross-entropy without terms), and measured before and after
(lepton_exp.measure)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

from lepton_exp.config.checks import finetune_epochs
from lepton_exp.config.registries import PRUNE_METHODS
from lepton_exp.measure import compression_report, latency_report
from lepton_exp.prune.export import load_pruned_into, pruned_metadata, save_snapshot
from lepton_exp.prune.magnitude import attach_masks, make_permanent
from lepton_exp.prune.targets import prunable_layers
from lepton_exp.teachers.load import Teacher, load_trained, resolve_teachers
from lepton_exp.tracking.record import atomic_file
from lepton_exp.tracking.rundir import check_checkpoint
from lepton_exp.training.classify import ClassificationModule
from lepton_exp.training.context import StageContext, StageOutput, TrainRun
from lepton_exp.training.distill import check_compatible, distillation_module, fit_distillation
from lepton_exp.training.parallel import measured_alone
from lepton_exp.training.resume import rng_states, set_rng_states
from lepton_exp.training.trainer import build_trainer, evaluate

# Measured figures compared before/after (the rest of the report is in the record only).
RATIOS = {"macs": "macs_reduction", "nonzero_params": "nonzero_params_reduction",
          "sparse_bytes": "sparse_bytes_reduction", "latency_ms_b1": "speedup_b1"}


@dataclass
class Prepared:
    dense: nn.Module
    source: dict[str, Any]
    teachers: list[Teacher]


@dataclass
class Schedule:
    """When the method prunes: its ``prune`` step before each finetuning round (``targets``:
    the sparsity each reaches, None: no step), its ``callbacks`` during finetuning, or both."""

    targets: list[float | None]
    epochs: list[int]  # finetuning epochs of each round
    callbacks: list = field(default_factory=list)
    best_eligible: Callable[[Any], bool] | None = None


def prepare(cfg, datamodule, train: TrainRun) -> Prepared:
    """Before the run's loggers start: the dense model (loaded, or trained and cached like a
    teacher) and, when finetuning distils, the teachers."""
    info = datamodule.info
    from_teacher = bool(cfg.distill.terms) and cfg.prune.teacher == "teacher"
    if from_teacher:  # fail on unpairable taps before anything is trained
        check_compatible(cfg, datamodule)
    dense, source = load_trained(cfg, "prune.dense", cfg.prune.dense, cfg.model, "model", info,
                                 train)
    teachers: list[Teacher] = []
    if from_teacher:
        teachers = resolve_teachers(cfg, info, train)
    elif cfg.distill.terms:  # the dense model teaches its pruned self
        teachers = [Teacher(copy.deepcopy(dense), 1.0, {**source, "role": "dense"})]
    return Prepared(dense, source, teachers)


def _round_targets(sparsity: float, rounds: int) -> list[float]:
    """Sparsity after each round: rising linearly to ``sparsity`` (torch-pruning's default
    iterative schedule)."""
    return [sparsity * (index + 1) / rounds for index in range(rounds)]


def _round_epochs(max_epochs: int, rounds: int) -> list[int]:
    """Finetuning epochs per round, summing to ``max_epochs`` (the remainder goes last)."""
    share = max_epochs // rounds
    return [share] * (rounds - 1) + [max_epochs - (rounds - 1) * share]


def _schedule(method, cfg, layers: dict[str, nn.Module]) -> Schedule:
    prune, total_epochs = cfg.prune, finetune_epochs(cfg)
    callbacks, best_eligible = ([], None)
    if hasattr(method, "callbacks"):  # may prune already (an initial sparsity)
        callbacks, best_eligible = method.callbacks(layers, cfg)
    if not hasattr(method, "prune"):  # prunes while finetuning only: one finetuning
        return Schedule([None], [total_epochs], callbacks, best_eligible)
    return Schedule(_round_targets(prune.sparsity, prune.rounds),
                    _round_epochs(total_epochs, prune.rounds), callbacks, best_eligible)


def _finetune_cfg(cfg):
    finetune_cfg = cfg.copy()  # the dense model and teacher keep cfg's own lr
    if cfg.prune.finetune_lr is not None:
        finetune_cfg.optim.lr = cfg.prune.finetune_lr
    return finetune_cfg


SNAPSHOT = "pruned.safetensors"  # a finished round's model: shapes, masks and weights
ROUND_DONE = "round.pt"  # written last, by rank zero, when a round ends: the sparsity reached


def _round_dir(run_dir: Path, index: int, last: bool) -> Path:
    """Where round ``index`` (0-based) finetunes: its own directory, the run's for the last."""
    return run_dir if last else run_dir / f"round{index + 1}"


def _rng_file(directory: Path, rank: int) -> Path:
    return directory / f"rng-rank{rank}.pt"  # each DDP rank's RNG states at the round's end


def finished_rounds(run_dir: Path, rounds: int) -> int:
    """Rounds before the last that an earlier attempt in ``run_dir`` finished."""
    done = 0
    while done < rounds - 1 and (_round_dir(run_dir, done, False) / ROUND_DONE).is_file():
        done += 1
    return done


def resume_point(run_dir: Path) -> Path | None:
    """The newest state an earlier attempt left in the rounds before the last: a finished
    round's end, else the checkpoint of the round it stopped in."""
    def number(path: Path) -> int:
        return int(path.relative_to(run_dir).parts[0].removeprefix("round"))

    # (a round's end before its own checkpoint: max() keeps the first of equals)
    found = [*run_dir.glob(f"round*/{ROUND_DONE}"), *run_dir.glob("round*/checkpoints/last.ckpt")]
    return max(found, key=number, default=None)


def _save_round(model: nn.Module, directory: Path, model_name: str, sparsity: float) -> None:
    """Every rank its RNG states, then (once all have) rank zero the model, which the ranks
    hold alike, and the mark that the round is done."""
    rank = rank_zero_only.rank
    with atomic_file(_rng_file(directory, rank), "wb") as handle:
        torch.save(rng_states(), handle)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    if rank == 0:
        save_snapshot(model, directory / SNAPSHOT, model_name)
        with atomic_file(directory / ROUND_DONE, "wb") as handle:
            torch.save({"sparsity": sparsity}, handle)


def _restore_round(model: nn.Module, directory: Path) -> float:
    """The model and this rank's RNG states as the round left them; the sparsity reached."""
    done = check_checkpoint(directory / ROUND_DONE)
    rng = check_checkpoint(_rng_file(directory, rank_zero_only.rank))
    load_pruned_into(model, directory / SNAPSHOT)
    set_rng_states(rng)
    return done["sparsity"]


def _continue_from(model: nn.Module, directory: Path, resuming: bool) -> Path | None:
    """The round's last checkpoint when an earlier attempt stopped inside it; the masks it
    holds are attached first (pruning while finetuning may have made them after the start)."""
    last = directory / "checkpoints" / "last.ckpt"
    if not (resuming and last.is_file()):
        return None
    attach_masks(model, check_checkpoint(last)["state_dict"], prefix="model.")
    return last


def _prune_in_rounds(ctx: StageContext, method, schedule: Schedule,
                     layers: dict[str, nn.Module], example, evaluator,
                     metrics: dict[str, float]) -> tuple[dict, dict]:
    """Each round: the method's pruning step, then finetuning; a continued attempt starts
    after the rounds it finished. Adds ``test_pruned/*`` to ``metrics``; returns the last
    finetuning's result and the teacher-output cache's info."""
    cfg, datamodule, prepared = ctx.cfg, ctx.datamodule, ctx.prepared
    finetune_cfg, model = _finetune_cfg(cfg), prepared.dense
    resuming, count = ctx.resume_from is not None, len(schedule.targets)
    start = finished_rounds(ctx.run_dir, count) if resuming else 0
    previous = _restore_round(model, _round_dir(ctx.run_dir, start - 1, False)) if start else 0.0
    result, cache_info = {}, {}
    for index in range(start, count):
        target, last = schedule.targets[index], index == count - 1
        if target is not None:
            method.prune(model, layers, cfg, target, previous, example)
            previous = target
        # Right after the pruning that reached the final sparsity, before its finetuning
        # (methods that prune while finetuning have no such moment).
        if last and target is not None:
            metrics.update(evaluate(evaluator, datamodule, "test_pruned", cfg.trainer))
        directory = _round_dir(ctx.run_dir, index, last)
        resume_from = _continue_from(model, directory, resuming)
        module, cache_info = distillation_module(finetune_cfg, datamodule, model,
                                                 prepared.teachers)
        trainer, checkpoints = build_trainer(finetune_cfg, directory, ctx.loggers,
                                             callbacks=schedule.callbacks,
                                             best_eligible=schedule.best_eligible,
                                             resume_from=resume_from,
                                             max_epochs=schedule.epochs[index])
        result = fit_distillation(trainer, module, datamodule, checkpoints, test=last)
        if not last:
            _save_round(model, directory, cfg.model.name, previous)
    cache_info.update(result.get("cache_stats", {}))
    return result, cache_info


def prune_and_finetune(ctx: StageContext) -> StageOutput:
    cfg, datamodule, prepared = ctx.cfg, ctx.datamodule, ctx.prepared
    model = prepared.dense
    example = datamodule.example_batch(1, full_length=True)
    evaluator = ClassificationModule(model, datamodule.info, cfg.optim, cfg.scheduler)
    metrics = evaluate(evaluator, datamodule, "test_dense", cfg.trainer)
    before = compression_report(model, example, latency=False)
    dense = copy.deepcopy(model)  # timed beside the pruned model at the end
    layers = prunable_layers(model, cfg.prune.skip)
    method = PRUNE_METHODS.get(cfg.prune.method)
    schedule = _schedule(method, cfg, layers)
    result, cache_info = _prune_in_rounds(ctx, method, schedule, layers, example, evaluator,
                                          metrics)
    metrics.update(result["metrics"])
    make_permanent(model)  # measured and exported as plain tensors (no mask hooks)
    after = _measure(dense, model, example, before, cfg.prune.latency_batch, metrics)
    extra = {
        "prune": {"method": cfg.prune.method, "requested_sparsity": cfg.prune.sparsity,
                  "rounds": len(schedule.targets), "dense": prepared.source,
                  "pruned_layers": sorted(layers)},
        "compression": {"dense": before, "pruned": after},
        "teachers": [t.source | {"weight": t.weight} for t in prepared.teachers],
        "teacher_output_cache": cache_info,
        "distill_terms": sorted(cfg.distill.terms),
        "timing": result["timing"],  # of the (last) finetuning
    }
    return StageOutput(model=model, metrics=metrics, checkpoints=result["checkpoints"],
                       extra=extra, export_metadata=_export_metadata(cfg, model, datamodule),
                       summary={"compress/layer_sparsity": after["layer_sparsity"]},
                       teachers=prepared.teachers)


def _measure(dense: nn.Module, model: nn.Module, example, before: dict[str, Any],
             latency_batch: int, metrics: dict[str, float]) -> dict[str, Any]:
    """The pruned model's compression report (``before`` gets the dense model's latency);
    both reports and their ratios go into ``metrics``."""
    after = compression_report(model, example, latency=False)
    dense_latency, pruned_latency = measured_alone(
        lambda: latency_report([dense, model], example, latency_batch))
    before.update(dense_latency)
    after.update(pruned_latency)
    metrics.update(_flat("compress_dense", before))
    metrics.update(_flat("compress", after))
    for key, ratio in RATIOS.items():
        if after[key]:
            metrics[f"compress/{ratio}"] = round(before[key] / after[key], 4)
    return after


def _export_metadata(cfg, model: nn.Module, datamodule) -> dict[str, str]:
    """The rebuild recipe in the export's metadata: structured pruning changed the shapes."""
    info = datamodule.info
    kwargs = OmegaConf.to_container(cfg.model.kwargs) if cfg.model.kwargs else {}
    return pruned_metadata(model, cfg.model.name, num_classes=info.num_classes,
                           in_chans=info.in_chans, drop_rate=cfg.model.drop_rate, **kwargs)


def _flat(prefix: str, report: dict[str, Any]) -> dict[str, float]:
    return {f"{prefix}/{key}": value for key, value in report.items()
            if not isinstance(value, dict)}
