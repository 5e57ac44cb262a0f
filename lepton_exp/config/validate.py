"""Checks that types cannot express: ranges, choices, and what only makes sense together.

:func:`validate` raises one :class:`ConfigError` for the first problem, a line that names the
key and what to change. Checks that belong to one data set, prune method or quant method sit
in that entry's module (its ``check``), found through the registries.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Optional

from omegaconf import DictConfig, OmegaConf

from lepton_exp.config.checks import (
    PIPELINE,
    check_choice,
    common_checks,
    distill_checks,
    export_checks,
    prune_checks,
)
from lepton_exp.config.registries import LOGGERS, SCHEMA_GROUPS, STAGES
from lepton_exp.config.schemas import CHOICES
from lepton_exp.errors import ConfigError, did_you_mean


def dotted_keys(node: Any, prefix: str = "") -> list[str]:
    """All leaf and branch keys of a config as dotted paths (for 'did you mean' hints)."""
    keys = []
    if isinstance(node, DictConfig):
        for key in node.keys():
            path = f"{prefix}{key}"
            keys.append(path)
            try:
                child = node._get_node(key)
            except Exception:  # noqa: BLE001 - interpolations that cannot resolve yet
                continue
            keys += dotted_keys(child, path + ".")
    return keys


def _missing_value(cfg: DictConfig) -> Optional[str]:
    for key in dotted_keys(cfg):
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, throw_on_missing=False) if parent else cfg
        if isinstance(node, DictConfig) and OmegaConf.is_missing(node, leaf):
            return f"{key} has no value: set it on the command line ({key}=...)"
    return None


def _schema_nodes(cfg: DictConfig, prefix: str = "") -> Iterator[tuple[str, Any, DictConfig]]:
    """(dotted prefix, schema, node) for every config node typed by a dataclass schema."""
    schema = OmegaConf.get_type(cfg)
    if dataclasses.is_dataclass(schema):
        yield prefix, schema, cfg
    for key in cfg.keys():
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            yield from _schema_nodes(child, f"{prefix}{key}.")


def _unknown_key(cfg: DictConfig) -> Optional[str]:
    """Keys added with `+key=value` to a node that has a schema (Hydra lets them through)."""
    for prefix, schema, node in _schema_nodes(cfg):
        fields = {f.name for f in dataclasses.fields(schema)}
        for key in node.keys():
            if key not in fields:
                known = [f"{prefix}{name}" for name in fields]
                hint = did_you_mean(f"{prefix}{key}", known)
                return (f"unknown config key '{prefix}{key}'{hint}:"
                        " list the keys with `lepton-exp --cfg job`")
    return None


def _choices(cfg: DictConfig) -> Iterator[Optional[str]]:
    """The schemas' ``choice`` fields hold one of their values."""
    for prefix, schema, node in _schema_nodes(cfg):
        for spec in dataclasses.fields(schema):
            if CHOICES in spec.metadata:
                yield check_choice(f"{prefix}{spec.name}", node.get(spec.name),
                                   spec.metadata[CHOICES])


def _entries(cfg: DictConfig) -> Iterator[Optional[str]]:
    """The selected entries exist, and their own checks."""
    yield check_choice("stage", cfg.stage, (*STAGES.names(), PIPELINE))
    yield LOGGERS.unknown(cfg.logger.name) if cfg.logger.name not in LOGGERS else None
    for group, (registry, name_key) in SCHEMA_GROUPS.items():
        yield from registry.check(cfg[group][name_key], cfg)
    if cfg.stage in STAGES:
        yield from STAGES.attribute(cfg.stage, "STAGE").check(cfg)


def validate(cfg: DictConfig) -> None:
    """Check ranges and choices that types cannot express; raise one ConfigError for the first."""
    for problem in (_missing_value(cfg), _unknown_key(cfg)):
        if problem:
            raise ConfigError(problem)
    groups = (_entries(cfg), _choices(cfg), common_checks(cfg), distill_checks(cfg),
              prune_checks(cfg), export_checks(cfg))
    for checks in groups:
        for problem in checks:
            if problem:
                raise ConfigError(problem)
