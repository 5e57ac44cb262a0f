"""Data sets by name: `data=<name>` selects an entry of ``lepton_exp.data.sets``; adding one
is its module there + its yaml in conf/data.

Importing this package imports no torch (config composition imports every entry, and so this
package): the data module classes load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lepton_exp.config.registries import DATASETS

if TYPE_CHECKING:
    from lepton_exp.data.base import ClassificationData, DataInfo, Split
    from lepton_exp.data.image import ImageClassificationData

_LAZY = {"ClassificationData": "base", "DataInfo": "base", "ImageClassificationData": "image",
         "Split": "base"}


def build_datamodule(cfg) -> ClassificationData:
    """The data module of data set ``cfg.name`` (a ConfigError naming the known ones if it is
    not one)."""
    return DATASETS.get(cfg.name).build(cfg)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ClassificationData", "DataInfo", "ImageClassificationData", "Split",
           "build_datamodule"]
