"""Names derived from a config: the default run name, the default stage, the method label,
and the keys a sweep varies (which the run names carry)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

from lepton_exp.config.registries import NONE, STAGES

# How the keys sweeps vary most read in a run name: distill-kd-T2-resnet8-cifar10. Others
# read as their last part and value: distill.terms.kd.weight=0.5 -> weight0.5.
SHORT_KEYS = {"distill.temperature": "T", "distill.alpha": "alpha", "optim.lr": "lr",
              "optim.weight_decay": "wd", "trainer.max_epochs": "ep", "data.batch_size": "bs",
              "prune.sparsity": "sp", "teacher.model.name": "t-"}
# What the stage's own name already shows (its method, model, data, prune, quantization).
_IN_BASE_NAME = ("distill", "model", "model.name", "data", "data.name", "prune", "prune.method",
                 "quant", "quant.method", "stage", "name", "name_keys", "sweep")


def method_label(terms: Any) -> str:
    """The distillation method as one name (W&B config and tags, result tables): the term
    names sorted and joined, ``at+kd`` for {kd, at} in any order; ``none`` without terms."""
    return "+".join(sorted(terms)) if terms else "none"


def run_name(stage: str, model: str, data: str, terms: Any, prune: Any = None,
             sparsity: Any = None, quant: Any = "none", name_keys: Any = (),
             _root_: Any = None) -> str:
    """Default run name, the stage's (`distill-kd+at-resnet8-cifar10`,
    `teacher-resnet20-cifar10`, `prune-magnitude0.5+kd-resnet8-digits`), with the values of
    ``name_keys`` (what a sweep varies) after the method: `distill-kd-T2-resnet8-cifar10`;
    quantized runs end in `-<quant method>`."""
    distilled = "+".join(terms) if terms else "none"
    suffix = "" if quant in (None, NONE) else f"-{quant}"
    tail = f"-{model}-{data}"
    if stage not in STAGES:  # a pipeline (named by its preset), or a typo validation reports
        return f"{stage}{tail}{suffix}"
    keys = list(name_keys or ())
    if stage == "teacher" and "distill" in keys:
        # distill=none beside distillation methods: the student alone, not a teacher
        name = f"distill-none{tail}"
    else:
        name = STAGES.attribute(stage, "STAGE").run_name(model, data, distilled, prune, sparsity)
    label = swept_label(keys, _root_, stage) if _root_ is not None else ""
    if label and name.endswith(tail):
        name = f"{name[:-len(tail)]}-{label}{tail}"
    return f"{name}{suffix}"


def swept_label(keys: Iterable[str], root: Any, stage: str = "") -> str:
    """The values of ``keys`` in ``root`` in short form, joined by '-' (``T2-seed1``)."""
    parts = []
    shown = _IN_BASE_NAME + (("prune.sparsity",) if stage == "prune" else ())
    for key in keys:
        if key in shown or (stage == "teacher" and key.startswith(("distill.", "teacher."))):
            continue  # shown already, or read by no one (the student alone)
        value = OmegaConf.select(root, key, default=None, throw_on_missing=False)
        group = isinstance(value, DictConfig)
        if group:  # a group (optim=adamw): its option's name
            value = value.get("name", None)
        if isinstance(value, float):
            value = f"{value:g}"  # T2, not T2.0
        if isinstance(value, (list, tuple)) or OmegaConf.is_list(value):
            value = "_".join(str(item) for item in value)
        short = SHORT_KEYS.get(key, "" if group else key.rsplit(".", 1)[-1])
        parts.append(f"{short}{value}".replace("/", "_"))
    return "-".join(parts)


def swept_keys(overrides: list[str], conf_dir: Path) -> list[str]:
    """The keys a multirun varies: its command-line sweeps (``a=1,2``, ``range(..)``,
    ``choice(..)``) and those of a ``sweep=<preset>`` (its ``hydra.sweeper.params``), in
    order, as Hydra's own override parser reads them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    given = [o for o in overrides if not o.startswith("-")]
    given += [f"{key}={value}" for key, value in preset_params(given, conf_dir).items()]
    keys = [o.key_or_group for o in parser.parse_overrides(given) if o.is_sweep_override()]
    return [key for key in dict.fromkeys(keys) if not key.startswith("hydra")]


def preset_params(overrides: list[str], conf_dir: Path) -> dict[str, str]:
    """The ``hydra.sweeper.params`` of a ``sweep=<preset>`` among ``overrides`` that the
    command line does not set itself (it wins over the preset's)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(
        [o for o in overrides if not o.startswith("-")])
    given = {o.key_or_group for o in parsed}
    params: dict[str, str] = {}
    for override in parsed:
        if override.key_or_group == "sweep" and not override.is_sweep_override():
            preset = conf_dir / "sweep" / f"{override.value()}.yaml"
            found = OmegaConf.select(OmegaConf.load(preset), "hydra.sweeper.params",
                                     default=None) if preset.exists() else None
            params.update({key: str(value) for key, value in (found or {}).items()
                           if key not in given})
    return params


def stage_for(terms: Any, prune: Any = "none", from_run: Any = None) -> str:
    """Default stage: `compress` when a trained model is given (`from_run`), `prune` when a
    prune method is chosen, `distill` when a distillation term is (prune + distill:
    finetuning with distillation), else `teacher`."""
    if from_run:
        return "compress"
    if prune not in (None, NONE):
        return "prune"
    return "distill" if terms else "teacher"
