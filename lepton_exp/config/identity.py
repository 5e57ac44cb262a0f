"""Which settings make two runs the same run, derived from the schemas' ``not_result`` marks.

Run identity (a re-run continues or skips the earlier run of the same computed settings) and
the teacher-cache key (a teacher is reused by every run whose teacher settings compute the
same weights) are both :func:`computed_settings`, so they cannot disagree.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from lepton_exp.config.registries import SCHEMA_GROUPS
from lepton_exp.config.schemas import RESULT, RootConfig


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


def _not_result(schema: type, node: dict, prefix: str) -> Iterator[str]:
    hints = _hints(schema)
    for spec in dataclasses.fields(schema):
        key = f"{prefix}{spec.name}"
        if spec.metadata.get(RESULT) is False:
            yield key
            continue
        value = node.get(spec.name)
        child = (_group_schema(key, value) if key in SCHEMA_GROUPS
                 else hints.get(spec.name))
        if isinstance(value, dict) and dataclasses.is_dataclass(child):
            yield from _not_result(child, value, f"{key}.")


def not_result_keys(config: dict) -> list[str]:
    """Dotted keys of ``config`` (a root config as plain containers) that do not change what
    the run computes."""
    return list(_not_result(RootConfig, config, ""))


def computed_settings(config: dict) -> dict:
    """``config`` without the settings that do not change what a run computes."""
    config = json.loads(json.dumps(config, default=str))
    for key in not_result_keys(config):
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return config


# What trains a teacher (or a dense model): its data, architecture, optimisation and seed.
TEACHER_SECTIONS = ("data", "model", "optim", "scheduler", "seed", "trainer")


def teacher_settings(config: dict) -> dict:
    """The computed settings that determine a trained teacher's weights (its cache key)."""
    computed = computed_settings(config)
    return {section: computed.get(section) for section in TEACHER_SECTIONS}
