"""Distillation methods by name: every module in ``lepton_exp/distill/methods/`` is one.

Names are listed from the files without importing them (config validation stays torch-free);
a method's options are the keyword arguments of its ``Term`` class.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Any, Optional

from lepton_exp.config import ConfigError, did_you_mean

_METHODS_DIR = Path(__file__).resolve().parent / "methods"
#: every term's own option: its weight in the total loss (kd: null = 1 - distill.alpha)
WEIGHT = "weight"


def method_names() -> tuple[str, ...]:
    return tuple(sorted(info.name for info in pkgutil.iter_modules([str(_METHODS_DIR)])
                        if not info.name.startswith("_")))


def term_class(name: str):
    if name not in method_names():
        raise ConfigError(_unknown(name))
    return importlib.import_module(f"lepton_exp.distill.methods.{name}").Term


def _unknown(name: str) -> str:
    names = method_names()
    return (f"unknown distillation term '{name}'{did_you_mean(name, names)}: "
            f"distill.terms takes {', '.join(names)}")


def option_names(name: str) -> tuple[str, ...]:
    params = inspect.signature(term_class(name).__init__).parameters
    return (WEIGHT, *(p for p in params if p != "self"))


def check_options(name: str, options: Any) -> Optional[str]:
    """A one-line problem with ``distill.terms.<name>``'s options, or None."""
    if name not in method_names():
        return _unknown(name)
    if options is None:
        return None
    if not hasattr(options, "keys"):
        return (f"distill.terms.{name} must map options to values (e.g. {{weight: 1.0}}), "
                f"got {options!r}")
    known = option_names(name)
    for key in options.keys():
        if key not in known:
            return (f"unknown option distill.terms.{name}.{key}{did_you_mean(str(key), known)}: "
                    f"{name} takes {', '.join(known)}")
    return None


def build_term(name: str, options: dict) -> tuple[Any, Optional[float]]:
    """The term module and its configured weight (None: derived from alpha)."""
    problem = check_options(name, options)
    if problem:
        raise ConfigError(problem)
    options = dict(options or {})
    weight = options.pop(WEIGHT, None)
    term = term_class(name)(**options)
    if weight is None and not term.weight_from_alpha:
        weight = 1.0
    return term, weight
