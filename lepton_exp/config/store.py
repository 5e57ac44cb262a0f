"""Registration with Hydra: the schemas in ConfigStore and the resolvers ``conf/`` uses.

Called explicitly (by :func:`lepton_exp.config.compose.compose_config` and the CLI) before
anything composes ``conf/``; nothing is registered on import.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import ListConfig, OmegaConf

from lepton_exp.config.naming import run_name, stage_for
from lepton_exp.config.registries import SCHEMA_GROUPS
from lepton_exp.config.schemas import RootConfig
from lepton_exp.digest import short_hash


def schema_name(group: str, entry: str) -> str:
    """What ``conf/<group>/<entry>.yaml`` pulls in: ``- /<entry>_<group>_schema@_here_``.
    (Stored outside any group, so ``--help`` does not list schemas as options.)"""
    return f"{entry}_{group}_schema"


@functools.lru_cache(maxsize=None)
def register_configs() -> None:
    store = ConfigStore.instance()
    store.store(name="root_schema", node=RootConfig)
    for group, (registry, _) in SCHEMA_GROUPS.items():
        for entry, schema in registry.schemas().items():
            store.store(name=schema_name(group, entry), node=schema)
    resolvers = {"run_name": run_name, "stage_for": stage_for, "lepton_gpus": _gpus_per_node,
                 "existing_dir": _existing_dir,
                 "short_hash": lambda text: short_hash(str(text))}
    for name, resolver in resolvers.items():
        OmegaConf.register_new_resolver(name, resolver, replace=True)


def _gpus_per_node(accelerator: str, devices: Any) -> int:
    """GPUs a cluster job asks for (hydra/launcher=slurm): the trainer's devices, none on CPU."""
    if accelerator == "cpu":
        return 0
    return len(devices) if isinstance(devices, (list, tuple, ListConfig)) else int(devices)


def _existing_dir(path: str) -> str:
    """``path``, created if missing: for files whose writer will not create their directory
    (Optuna's sqlite study storage)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return path

