"""Compose the command line's overrides before the run starts and explain any problem in one line.

Hydra reports composition errors over several lines and only for the first job of a
sweep. Here every value of every sweep is composed once (about 50 ms each), so a typo in
the fifth temperature of a sweep fails before the first job trains, with a message that
names the key and suggests the fix.
"""

from __future__ import annotations

import re
from typing import Iterable

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import OmegaConf

from lepton_exp.config import (CONF_DIR, ROOT_CONFIG, ConfigError, _did_you_mean, dotted_keys,
                               validate)


class PreflightError(Exception):
    pass


def preflight(argv: list[str]) -> None:
    from hydra._internal.utils import get_args_parser

    try:
        args, _ = get_args_parser().parse_known_args(argv)
    except SystemExit:
        return  # malformed flags: Hydra's own parser reports them
    if (args.help or args.hydra_help or args.info or args.shell_completion or args.config_path
            or args.config_dir or args.experimental_rerun):
        return
    config_name = args.config_name or ROOT_CONFIG
    try:
        parsed = OverridesParser.create().parse_overrides(args.overrides)
    except Exception as error:  # noqa: BLE001 - OverrideParseException and friends
        raise PreflightError(f"cannot parse the overrides: {_first_line(error)}") from None
    parsed = [o for o in parsed if not _is_hydra_override(o)]
    sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    if sweeps and not args.multirun:
        raise PreflightError(f"'{sweeps[0]}' is a sweep: add -m (--multirun) to run one job "
                             "per value, or give a single value")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for overrides in _candidates(parsed):
            _check(config_name, overrides)


def _is_hydra_override(override: Override) -> bool:
    key = override.key_or_group
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def _candidates(parsed: list[Override]) -> Iterable[list[str]]:
    """First value of every sweep, then each other sweep value with the rest at their first."""
    choices: list[list[str]] = []
    for override in parsed:
        if override.is_sweep_override():
            try:
                values = list(override.sweep_string_iterator())
            except Exception:  # noqa: BLE001 - interval()/glob sweeps resolved by sweepers later
                values = []
            choices.append([f"{override.get_key_element()}={v}" for v in values])
        else:
            choices.append([override.input_line])
    base = [values[0] for values in choices if values]
    yield base
    for index, values in enumerate(choices):
        for value in values[1:]:
            variant = list(base)
            variant[sum(1 for v in choices[:index] if v)] = value
            yield variant


def _check(config_name: str, overrides: list[str]) -> None:
    try:
        cfg = compose(config_name=config_name, overrides=overrides)
    except Exception:  # noqa: BLE001 - find which override caused it and explain that one
        raise PreflightError(_explain(config_name, overrides)) from None
    try:
        validate(cfg)
    except ConfigError as error:
        raise PreflightError(str(error)) from None


def _explain(config_name: str, overrides: list[str]) -> str:
    try:
        previous = compose(config_name=config_name, overrides=[])
    except Exception as error:  # noqa: BLE001 - the config files themselves are broken
        return f"the config in {CONF_DIR} does not compose: {_first_line(error)}"
    for count, override_line in enumerate(overrides, start=1):
        try:
            current = compose(config_name=config_name, overrides=overrides[:count])
        except Exception as error:  # noqa: BLE001
            return _explain_override(override_line, previous, error)
        previous = current
    return "the overrides do not compose (run with HYDRA_FULL_ERROR=1 for details)"


def _explain_override(line: str, before, error: Exception) -> str:
    override = OverridesParser.create().parse_override(line)
    key = override.key_or_group
    loader = GlobalHydra.instance().config_loader()
    if key in _groups(loader):  # group=option
        options = sorted(loader.get_group_options(key))
        value = str(override.value())
        if value not in options:
            return (f"unknown option {key}={value}{_did_you_mean(value, options)}: "
                    f"choose one of {', '.join(options)}")
    elif not override.is_add():
        known = dotted_keys(before)
        if key not in known:
            return (f"unknown config key '{key}'{_did_you_mean(key, known)}: "
                    "list the keys with `lepton-exp --cfg job`")
    message = re.sub(r"\s+", " ", _first_line(_innermost(error)))
    return f"invalid override '{line}': {message}"


def _groups(loader) -> list[str]:
    found = []

    def walk(parent: str) -> None:
        for name in loader.list_groups(parent):
            path = f"{parent}/{name}" if parent else name
            found.append(path)
            walk(path)

    walk("")
    return found


def _innermost(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
