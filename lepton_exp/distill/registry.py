"""Distillation methods by name: every module in ``lepton_exp/distill/methods/`` is one
(an entry of ``lepton_exp.config.registries.DISTILL_METHODS``); a method's options are its
weight and the keyword arguments of its ``Term`` class (checked in lepton_exp.config.checks)."""

from __future__ import annotations

from typing import Any, Optional

from lepton_exp.config.checks import WEIGHT, check_term_options, term_class
from lepton_exp.config.registries import DISTILL_METHODS
from lepton_exp.errors import ConfigError


def method_names() -> tuple[str, ...]:
    return DISTILL_METHODS.names()


def check_options(name: str, options: Any) -> Optional[str]:
    """A one-line problem with ``distill.terms.<name>``'s options, or None."""
    return check_term_options(name, options)


def build_term(name: str, options: dict) -> tuple[Any, Optional[float]]:
    """The term module and its configured weight (None: derived from alpha)."""
    problem = check_term_options(name, options)
    if problem:
        raise ConfigError(problem)
    options = dict(options or {})
    weight = options.pop(WEIGHT, None)
    term = term_class(name)(**options)
    if weight is None and not term.weight_from_alpha:
        weight = 1.0
    return term, weight
