"""Composing ``conf/``: the one function the CLI's preflight, pipelines, benchmarks and tests
use, inside a running Hydra app or outside one."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from lepton_exp.config import CONF_DIR, ROOT_CONFIG
from lepton_exp.config.store import register_configs
from lepton_exp.errors import ConfigError, one_line


@contextlib.contextmanager
def hydra_context(config_dir: Optional[str] = None, fresh: bool = False) -> Iterator[None]:
    """Hydra initialised on ``conf/`` (or ``config_dir``) unless an app already did; ``fresh``
    first drops whatever was initialised before (the CLI, before its app starts)."""
    register_configs()
    if fresh:
        GlobalHydra.instance().clear()
    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=config_dir or str(CONF_DIR), version_base="1.3"):
        yield


def compose_config(overrides: list[str], *, hydra_node: bool = False,
                   config_name: str = ROOT_CONFIG, explain: bool = True) -> DictConfig:
    """``conf/`` composed with ``overrides`` (with Hydra's own node when ``hydra_node``).
    Composition errors become one-line ConfigErrors unless ``explain=False``."""
    with hydra_context():
        try:
            return compose(config_name=config_name, overrides=list(overrides),
                           return_hydra_config=hydra_node)
        except Exception as error:  # noqa: BLE001 - Hydra's composition errors, made one line
            if not explain:
                raise
            raise ConfigError(f"cannot compose the config with {list(overrides)}: "
                              f"{one_line(error)[:200]}") from error
