"""Prune stage: a trained (dense) model is pruned, finetuned — with any ``distill`` terms, from
the teacher or from the dense model itself — and evaluated before pruning (``test_dense/*``),
right after pruning (``test_pruned/*``; not for gradual pruning, which prunes while
finetuning) and after finetuning (``test/*``, ``test_best/*``).

The pruning itself is plain functions in lepton_exp.prune; finetuning is the distillation
module (plain cross-entropy without terms). What the run obtained is measured on the final
model, never derived from the requested ratio: ``compress/*`` (after) beside
``compress_dense/*`` (before) in the record's metrics and W&B summary, per-layer sparsity in
the record's ``compression`` block. The export is a pruned-model safetensors file that
:func:`lepton_exp.prune.export.load_pruned` rebuilds without the pruning code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from lepton_exp.config import ConfigError, finetune_epochs
from lepton_exp.prune.channel import prune_channels
from lepton_exp.prune.export import pruned_metadata
from lepton_exp.prune.gradual import GradualPruning
from lepton_exp.prune.heads import prune_ffn, prune_heads
from lepton_exp.prune.magnitude import make_permanent, prune_unstructured
from lepton_exp.prune.measure import compression_report, latency_report
from lepton_exp.prune.targets import PRUNABLE, first_and_last, prunable_layers
from lepton_exp.stages.artifacts import Teacher, load_trained, resolve_teachers
from lepton_exp.stages.classify import ClassificationModule
from lepton_exp.stages.context import StageContext, StageOutput
from lepton_exp.stages.distill import check_compatible, distillation_module, fit_distillation
from lepton_exp.training.parallel import measured_alone
from lepton_exp.training.trainer import build_trainer, evaluate

# Measured figures compared before/after (the rest of the report is in the record only).
RATIOS = {"macs": "macs_reduction", "nonzero_params": "nonzero_params_reduction",
          "sparse_bytes": "sparse_bytes_reduction", "latency_ms_b1": "speedup_b1"}


@dataclass
class Prepared:
    dense: nn.Module
    source: dict[str, Any]
    teachers: list[Teacher]


def prepare_prune(cfg, datamodule) -> Prepared:
    """Before the run's loggers start: the dense model (loaded, or trained and cached like a
    teacher) and, when finetuning distils, the teachers."""
    info = datamodule.info
    if info.is_text and cfg.prune.method == "channel":
        raise ConfigError("prune=channel is for CNNs: prune transformers with prune=heads "
                          "(attention heads), ffn (FFN neurons), magnitude, random or gradual")
    if not info.is_text and cfg.prune.method in ("heads", "ffn"):
        raise ConfigError(f"prune={cfg.prune.method} is for transformers: prune CNNs "
                          "structurally with prune=channel")
    from_teacher = bool(cfg.distill.terms) and cfg.prune.teacher == "teacher"
    if from_teacher:  # fail on unpairable taps before anything is trained
        check_compatible(cfg, datamodule)
    dense, source = load_trained(cfg, "prune.dense", cfg.prune.dense, cfg.model, "model", info)
    teachers: list[Teacher] = []
    if from_teacher:
        teachers = resolve_teachers(cfg, info)
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


def _prune_once(model: nn.Module, layers: dict[str, nn.Module], cfg, target: float,
                previous: float, example) -> None:
    prune = cfg.prune
    if prune.method in ("magnitude", "random"):
        prune_unstructured(layers, target, method=prune.method, scope=prune.scope)
        return
    # Structured: each round removes the share of the *remaining* channels, heads or
    # neurons that reaches the target.
    amount = (target - previous) / (1.0 - previous)
    if prune.method in ("heads", "ffn"):
        (prune_heads if prune.method == "heads" else prune_ffn)(model, amount)
        return
    kept = [module for name, module in model.named_modules()
            if isinstance(module, PRUNABLE) and name not in layers]
    classifier = dict(model.named_modules())[first_and_last(model)[-1]]
    prune_channels(model, example, amount, importance=prune.importance,
                   ignored=[*kept, classifier], global_pruning=prune.scope == "global")


def run_prune(ctx: StageContext) -> StageOutput:
    cfg, datamodule, prepared = ctx.cfg, ctx.datamodule, ctx.prepared
    prune, info = cfg.prune, datamodule.info
    finetune_cfg = cfg.copy()  # the dense model and teacher keep cfg's own lr
    if prune.finetune_lr is not None:
        finetune_cfg.optim.lr = prune.finetune_lr
    total_epochs = finetune_epochs(cfg)
    model = prepared.dense
    example = datamodule.example_batch(1, full_length=True)
    evaluator = ClassificationModule(model, info, cfg.optim, cfg.scheduler)
    metrics = evaluate(evaluator, datamodule, "test_dense", cfg.trainer)
    before = compression_report(model, example, latency=False)
    dense = copy.deepcopy(model)  # timed beside the pruned model at the end
    layers = prunable_layers(model, prune.skip)

    callbacks, best_eligible = [], None
    if prune.method == "gradual":
        gradual = GradualPruning(layers, prune.initial_sparsity, prune.sparsity,
                                 frequency=prune.frequency, scope=prune.scope,
                                 horizon=(prune.begin, prune.end))
        if prune.initial_sparsity > 0:
            prune_unstructured(layers, prune.initial_sparsity, scope=prune.scope)
            gradual.current = prune.initial_sparsity
        callbacks, best_eligible = [gradual], (lambda trainer: gradual.finished)
        targets, epochs = [None], [total_epochs]
    else:
        targets = _round_targets(prune.sparsity, prune.rounds)
        epochs = _round_epochs(total_epochs, prune.rounds)

    previous, result, cache_info = 0.0, {}, {}
    for index, (target, round_epochs) in enumerate(zip(targets, epochs, strict=True)):
        last = index == len(targets) - 1
        if target is not None:
            _prune_once(model, layers, cfg, target, previous, example)
            previous = target
        # Right after the pruning that reached the final sparsity, before its finetuning
        # (gradual pruning prunes while finetuning: there is no such moment).
        if last and target is not None:
            metrics.update(evaluate(evaluator, datamodule, "test_pruned", cfg.trainer))
        module, cache_info = distillation_module(finetune_cfg, datamodule, model,
                                                 prepared.teachers)
        run_dir = ctx.run_dir if last else ctx.run_dir / f"round{index + 1}"
        trainer, checkpoints = build_trainer(finetune_cfg, run_dir, ctx.loggers,
                                             callbacks=callbacks, best_eligible=best_eligible,
                                             resume_from=ctx.resume_from if last else None,
                                             max_epochs=round_epochs)
        result = fit_distillation(trainer, module, datamodule, checkpoints if last else None)
    cache_info.update(result.get("cache_stats", {}))
    metrics.update(result["metrics"])

    make_permanent(model)  # measured and exported as plain tensors (no mask hooks)
    after = compression_report(model, example, latency=False)
    dense_latency, pruned_latency = measured_alone(
        lambda: latency_report([dense, model], example, prune.latency_batch))
    before.update(dense_latency)
    after.update(pruned_latency)
    metrics.update(_flat("compress_dense", before))
    metrics.update(_flat("compress", after))
    for key, ratio in RATIOS.items():
        if after[key]:
            metrics[f"compress/{ratio}"] = round(before[key] / after[key], 4)
    extra = {
        "prune": {"method": prune.method, "requested_sparsity": prune.sparsity,
                  "rounds": len(targets), "dense": prepared.source,
                  "pruned_layers": sorted(layers)},
        "compression": {"dense": before, "pruned": after},
        "teachers": [t.source | {"weight": t.weight} for t in prepared.teachers],
        "teacher_output_cache": cache_info,
        "distill_terms": sorted(cfg.distill.terms),
        "timing": result["timing"],  # of the (last) finetuning
    }
    # Rebuild recipe in the export's metadata: structured pruning changed the shapes.
    kwargs = OmegaConf.to_container(cfg.model.kwargs) if cfg.model.kwargs else {}
    metadata = pruned_metadata(model, cfg.model.name, num_classes=info.num_classes,
                               in_chans=info.in_chans, drop_rate=cfg.model.drop_rate, **kwargs)
    return StageOutput(model=model, metrics=metrics, checkpoints=result["checkpoints"],
                       extra=extra, export_metadata=metadata,
                       summary={"compress/layer_sparsity": after["layer_sparsity"]},
                       teachers=prepared.teachers)


def _flat(prefix: str, report: dict[str, Any]) -> dict[str, float]:
    return {f"{prefix}/{key}": value for key, value in report.items()
            if not isinstance(value, dict)}
