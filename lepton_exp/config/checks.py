"""The checks of the shared config sections (data, optim, scheduler, trainer, distill, teachers,
prune): each yields one line per problem, naming the key and what to change. Checks of one
data set, prune method or quant method live in that entry's module."""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Iterable, Iterator, Optional

from omegaconf import DictConfig

from lepton_exp.config.registries import DISTILL_METHODS, EXPORT_FORMATS, NONE, STAGES
from lepton_exp.errors import ConfigError, did_you_mean

SEED_LIMIT = 2**32  # numpy's seed range, which Lightning's seed_everything also uses
PIPELINE = "pipeline"  # stage=pipeline: a chain of stages (lepton_exp.app.pipeline), no stage
WEIGHT = "weight"  # every distillation term's own option: its weight in the total loss


def check_range(key: str, value: Any, low: float, high: float = math.inf, *,
                low_open: bool = False, high_open: bool = True) -> Optional[str]:
    if value is None:
        return None
    above_low = value > low if low_open else value >= low
    below_high = value < high if high_open else value <= high
    if above_low and below_high:  # NaN fails both comparisons, so it is reported
        return None
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    return f"{key}={value} is out of range: it must be in {lo}{low}, {high}{hi}"


def check_choice(key: str, value: Any, choices: Iterable[str]) -> Optional[str]:
    choices = tuple(choices)
    if value in choices:
        return None
    return f"{key}={value} is not one of {', '.join(choices)}" + did_you_mean(str(value), choices)


def check_workers(key: str, value: Any) -> Optional[str]:
    """A worker count: a number >= 0 or ``auto``."""
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{key}={value} is not a number of worker processes: give an integer >= 0 or auto"
    return check_range(key, value, 0)


def term_class(name: str) -> type:
    """The ``Term`` class of distillation method ``name`` (ConfigError when unknown)."""
    if name not in DISTILL_METHODS:
        raise ConfigError(unknown_term(name))
    return DISTILL_METHODS.get(name).Term


def unknown_term(name: str) -> str:
    names = DISTILL_METHODS.names()
    return (f"unknown distillation term '{name}'{did_you_mean(name, names)}: "
            f"distill.terms takes {', '.join(names)}")


def term_options(name: str) -> tuple[str, ...]:
    """A method's options: its weight, then its Term's keyword arguments."""
    params = inspect.signature(term_class(name).__init__).parameters
    return (WEIGHT, *(p for p in params if p != "self"))


def check_term_options(name: str, options: Any) -> Optional[str]:
    """A one-line problem with ``distill.terms.<name>``'s options, or None."""
    if name not in DISTILL_METHODS:
        return unknown_term(name)
    if options is None:
        return None
    if not hasattr(options, "keys"):
        return (f"distill.terms.{name} must map options to values (e.g. {{weight: 1.0}}), "
                f"got {options!r}")
    known = term_options(name)
    for key in options.keys():
        if key not in known:
            return (f"unknown option distill.terms.{name}.{key}{did_you_mean(str(key), known)}: "
                    f"{name} takes {', '.join(known)}")
    return None




def common_checks(cfg: DictConfig) -> Iterator[Optional[str]]:
    data, optim, scheduler = cfg.data, cfg.optim, cfg.scheduler
    yield from (
        check_range("seed", cfg.seed, 0, SEED_LIMIT),
        check_range("data.split_seed", data.split_seed, 0, SEED_LIMIT),
        check_range("data.batch_size", data.batch_size, 1),
        check_range("data.eval_batch_size", data.eval_batch_size, 1),
        check_workers("data.num_workers", data.num_workers),
        check_range("data.val_size", data.val_size, 0, low_open=True),
        check_range("data.train_subset", data.train_subset, 1),
        *(check_range("data.std", value, 0, low_open=True) for value in data.std or ()),
        check_range("optim.lr", optim.lr, 0, low_open=True),
        check_range("optim.weight_decay", optim.weight_decay, 0),
        check_range("optim.momentum", optim.momentum, 0, 1),
        *(check_range("optim.betas", beta, 0, 1) for beta in optim.betas),
        check_range("scheduler.gamma", scheduler.gamma, 0, 1, low_open=True, high_open=False),
        check_range("scheduler.warmup_epochs", scheduler.warmup_epochs, 0),
        check_range("scheduler.min_lr", scheduler.min_lr, 0),
        *(check_range("scheduler.milestones", fraction, 0, 1, low_open=True, high_open=False)
          for fraction in scheduler.milestones),
    )
    yield from _trainer_checks(cfg)
    if len(optim.betas) != 2:
        yield f"optim.betas needs two values (beta1, beta2), got {list(optim.betas)}"
    if optim.nesterov and optim.momentum <= 0:
        yield "optim.nesterov=true needs optim.momentum > 0"
    if data.val_size >= 1 and not (math.isfinite(data.val_size)
                                   and data.val_size == int(data.val_size)):
        yield (f"data.val_size={data.val_size} must be a fraction below 1 or a whole number of "
               "samples")
    if scheduler.name == "multistep" and not scheduler.milestones:
        yield ("scheduler.milestones is empty: give fractions of the run (e.g. [0.5,0.75]) or "
               "use scheduler=constant")
    if data.mean is not None and data.std is not None and len(data.mean) != len(data.std):
        yield "data.mean and data.std must have one value per channel each"


def text_data_checks(cfg: DictConfig) -> Iterator[Optional[str]]:
    """The checks of the options every text data set has (TextDataConfig)."""
    for key in ("val_subset", "test_subset"):
        yield check_range(f"data.{key}", cfg.data[key], 1)
    yield check_range("data.max_length", cfg.data.max_length, 8)


def _trainer_checks(cfg: DictConfig) -> Iterator[Optional[str]]:
    trainer = cfg.trainer
    yield from (
        # 0: a teacher run that evaluates a pretrained model as it is (TeacherStage.check)
        check_range("trainer.max_epochs", trainer.max_epochs, 0 if cfg.stage == "teacher" else 1),
        check_range("trainer.max_steps", trainer.max_steps, 1) if trainer.max_steps != -1
        else None,
        check_range("trainer.num_nodes", trainer.num_nodes, 1),
        check_range("trainer.gradient_clip_val", trainer.gradient_clip_val, 0),
        check_range("trainer.accumulate_grad_batches", trainer.accumulate_grad_batches, 1),
        check_range("trainer.check_val_every_n_epoch", trainer.check_val_every_n_epoch, 1),
        check_range("trainer.log_every_n_steps", trainer.log_every_n_steps, 1),
        check_range("trainer.num_sanity_val_steps", trainer.num_sanity_val_steps, -1),
        check_range("model.drop_rate", cfg.model.drop_rate, 0, 1),
        check_range("quant.latency_batch", cfg.quant.latency_batch, 1),
        check_range("logger.init_timeout", cfg.logger.init_timeout, 0, low_open=True),
        check_range("checkpoint_every_minutes", cfg.get("checkpoint_every_minutes"), 0,
                    low_open=True),
        check_range("threads", cfg.get("threads"), 1),  # null: this process's share
    )


def _layers_problem(key: str, spec: Any) -> Optional[str]:
    for side in ("student", "teacher"):
        value = spec.get(side, "auto") if hasattr(spec, "get") else None
        if value in ("auto", "uniform", "last"):
            continue
        if not (isinstance(value, Iterable) and not isinstance(value, str) and len(value) > 0
                and all(isinstance(i, int) and i >= 0 for i in value)):
            return (f"{key}.{side}={value} must be auto (= uniform), last or a non-empty list "
                    "of tap indices like [1,2,3]")
    return None


def distill_checks(cfg: DictConfig) -> Iterator[Optional[str]]:
    distill = cfg.distill
    terms = distill.terms or {}
    options = [check_term_options(name, options) for name, options in terms.items()]
    if any(options):
        yield from options
        return
    schedule = distill.schedule
    yield from (
        check_range("distill.temperature", distill.temperature, 0, low_open=True),
        check_range("distill.alpha", distill.alpha, 0, 1, high_open=False),
        check_range("distill.schedule.temperature_final", schedule.temperature_final, 0,
                    low_open=True),
        check_range("distill.schedule.alpha_final", schedule.alpha_final, 0, 1,
                    high_open=False),
        check_range("distill.warmup_epochs", distill.warmup_epochs, 0),
        check_range("distill.teacher_output_cache_gb", distill.teacher_output_cache_gb, 0),
        _layers_problem("distill.layers", distill.layers),
    )
    if schedule.name == "constant" and (schedule.temperature_final is not None
                                        or schedule.alpha_final is not None):
        yield ("distill.schedule.*_final is set but distill.schedule.name=constant: choose "
               "linear or cosine")
    yield from _term_checks(cfg)
    yield from _teacher_checks(cfg)


def _term_checks(cfg: DictConfig) -> Iterator[Optional[str]]:
    distill = cfg.distill
    schedule = distill.schedule
    feature_terms, own_layers = [], []
    for name, options in (distill.terms or {}).items():
        options = options or {}
        yield check_range(f"distill.terms.{name}.weight", options.get("weight"), 0,
                          low_open=True)
        term = term_class(name)
        if options.get("layers") is not None:
            own_layers.append(name)
            yield _layers_problem(f"distill.terms.{name}.layers", options["layers"])
        elif term.fixed_layers:
            own_layers.append(name)
        if term.pairs_over():  # terms that pair taps (features, attention maps)
            feature_terms.append(name)
        alphas = {distill.alpha, distill.alpha if schedule.alpha_final is None
                  else schedule.alpha_final}
        if term.weight_from_alpha and options.get("weight") is None and alphas == {1.0}:
            yield (f"distill.terms.{name}.weight is 1 - distill.alpha = 0: lower "
                   f"distill.alpha or give {name} a weight")
    layers_set = any(distill.layers[side] != "auto" for side in ("student", "teacher"))
    if layers_set and not feature_terms:
        users = [name for name in DISTILL_METHODS.names()
                 if term_class(name).pairs_over() and not term_class(name).fixed_layers]
        yield (f"distill.layers pairs taps but no term that uses them ({', '.join(users)}) "
               "is chosen: add one or drop distill.layers")
    elif layers_set and set(feature_terms) <= set(own_layers):
        yield (f"distill.layers is unused: {', '.join(feature_terms)} set their own taps; "
               f"change distill.terms.{feature_terms[0]}.layers instead")


def _teacher_checks(cfg: DictConfig) -> Iterator[Optional[str]]:
    for key, spec in [("teacher", cfg.teacher)] + [
            (f"extra_teachers[{i}]", t) for i, t in enumerate(cfg.extra_teachers)]:
        yield check_range(f"{key}.weight", spec.weight, 0, low_open=True)
        yield check_range(f"{key}.seed", spec.seed, 0, SEED_LIMIT)
        yield check_range(f"{key}.max_epochs", spec.max_epochs, 0)
        if spec.max_epochs == 0 and not (spec.checkpoint or spec.artifact or pretrained(
                spec.model)):
            yield (f"{key}.max_epochs=0 uses the teacher's pretrained weights as they are: "
                   f"set {key}.model.pretrained=true (timm) or {key}.model.pretrained_path "
                   f"(transformers), or train it ({key}.max_epochs >= 1)")
        yield check_range(f"{key}.lr", spec.lr, 0, low_open=True)
        if spec.checkpoint and spec.artifact:
            yield f"{key}.checkpoint and {key}.artifact are both set: keep one"


def pretrained(model: DictConfig) -> bool:
    """Whether ``model`` starts from pretrained weights (timm's or a transformers model's)."""
    return bool(model.pretrained or model.get("pretrained_path"))


def finetune_epochs(cfg: DictConfig) -> int:
    """Epochs a prune run finetunes for (prune.finetune_epochs, else trainer.max_epochs)."""
    return cfg.prune.finetune_epochs or cfg.trainer.max_epochs


def prune_checks(cfg: DictConfig) -> Iterator[Optional[str]]:
    """The settings every prune method shares (a method's own: its module's check)."""
    prune = cfg.prune
    dense = prune.dense
    yield from (
        check_range("prune.sparsity", prune.sparsity, 0, 1),
        check_range("prune.rounds", prune.rounds, 1),
        check_range("prune.finetune_lr", prune.finetune_lr, 0, low_open=True),
        check_range("prune.finetune_epochs", prune.finetune_epochs, 1),
        check_range("prune.latency_batch", prune.latency_batch, 1),
        check_range("prune.dense.seed", dense.seed, 0, SEED_LIMIT),
        check_range("prune.dense.max_epochs", dense.max_epochs, 1),
        check_range("prune.dense.lr", dense.lr, 0, low_open=True),
    )
    if dense.checkpoint and dense.artifact:
        yield "prune.dense.checkpoint and prune.dense.artifact are both set: keep one"
    pruning = [name for name in STAGES.names() if STAGES.attribute(name, "STAGE").prunes]
    if cfg.stage not in (*pruning, PIPELINE) and prune.method != NONE:
        yield (f"prune={prune.method} applies to stage={'|'.join(pruning)}, but "
               f"stage={cfg.stage}: drop the stage override (or prune=none)")


def export_checks(cfg: DictConfig) -> Iterator[Optional[str]]:
    """The export formats exist, take the options given, and their own checks pass."""
    export = cfg.export
    yield from (check_range("export.check_batches", export.check_batches, 1),
                check_range("export.tolerance", export.tolerance, 0, low_open=True),
                check_range("export.min_agreement", export.min_agreement, 0, 1),
                check_range("export.calibration_batches", export.calibration_batches, 1),
                check_range("export.latency_batch", export.latency_batch, 1),
                check_range("export.threads", export.threads, 1))
    for name, options in export.formats.items():
        if name not in EXPORT_FORMATS:
            yield EXPORT_FORMATS.unknown(name).replace("export.formats=", "export=")
            continue
        known = [f.name for f in dataclasses.fields(EXPORT_FORMATS.get(name).Schema)]
        for key in (options or {}).keys():
            if key not in known:
                yield (f"unknown option export.formats.{name}.{key}"
                       f"{did_you_mean(str(key), known)}: {name} takes "
                       f"{', '.join(known) or 'no options'}")
        yield from EXPORT_FORMATS.check(name, cfg)
