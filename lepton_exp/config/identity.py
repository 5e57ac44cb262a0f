"""Which settings make two runs the same run, derived from the schemas' ``not_result`` marks.

Run identity (a re-run continues or skips the earlier run of the same computed settings) and
the teacher-cache key (a teacher is reused by every run whose teacher settings train the same
weights) both read the schemas' marks, so they cannot disagree: the key leaves out what
identity leaves out, and also what changes only the measurement (``not_trained``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from lepton_exp.config.registries import SCHEMA_GROUPS
from lepton_exp.config.schemas import RESULT, TRAINED, RootConfig


def to_container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore


def flatten(tree: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values (W&B filters on them as such)."""
    flat: dict[str, Any] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}{sep}", sep))
        return flat
    flat[prefix[: -len(sep)]] = tree
    return flat


@functools.lru_cache(maxsize=None)
def _hints(schema: type) -> dict[str, Any]:
    return typing.get_type_hints(schema)


def _group_schema(key: str, node: Any) -> type | None:
    """The selected option's schema for a group typed per option (data, prune, quant)."""
    registry, name_key = SCHEMA_GROUPS[key]
    name = node.get(name_key) if isinstance(node, dict) else None
    return getattr(registry.get(name), "Schema", None) if name in registry else None


def _marked(schema: type, node: dict, prefix: str, mark: str) -> Iterator[str]:
    """Dotted keys of ``node`` whose field is marked ``mark: False``, and the keys a group's
    selected option does not declare (an earlier version's fields, e.g. in an old record)."""
    hints = _hints(schema)
    declared = {spec.name for spec in dataclasses.fields(schema)}
    yield from (f"{prefix}{key}" for key in node if key not in declared)
    for spec in dataclasses.fields(schema):
        key = f"{prefix}{spec.name}"
        if spec.metadata.get(mark) is False:
            yield key
            continue
        value = node.get(spec.name)
        child = (_group_schema(key, value) if key in SCHEMA_GROUPS
                 else hints.get(spec.name))
        if isinstance(value, dict) and dataclasses.is_dataclass(child):
            yield from _marked(child, value, f"{key}.", mark)


def _without(config: dict, mark: str) -> dict:
    config = json.loads(json.dumps(config, default=str))
    for key in list(_marked(RootConfig, config, "", mark)):
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return config


def computed_settings(config: dict) -> dict:
    """``config`` (a root config as plain containers) without the settings that do not change
    what a run computes: two runs are the same run when these are equal."""
    return _without(config, RESULT)


# What trains a teacher (or a dense model): its data, architecture, optimisation and seed.
TEACHER_SECTIONS = ("data", "model", "optim", "scheduler", "seed", "trainer")


def teacher_settings(config: dict) -> dict:
    """The settings that determine a trained teacher's weights (its cache key): the computed
    settings of its sections, less those that change only what is measured or where."""
    trained = _without(config, TRAINED)
    return {section: trained.get(section) for section in TEACHER_SECTIONS}


def same_computation(config: dict) -> dict:
    """What two runs of one sweep must share to compute the same thing: the computed settings
    less the name, and less the distillation and teacher settings where a run trains its
    model alone (stage=teacher: ``distill=none`` at any ``distill.temperature``)."""
    settings = computed_settings(config)
    settings.pop("name", None)
    if settings.get("stage") == "teacher":
        for section in ("distill", "teacher", "extra_teachers"):
            settings.pop(section, None)
    return settings
