"""Compose the command line's overrides before the run starts and explain any problem in one line.

Hydra reports composition errors over several lines and only for the first job of a
sweep. Here every value of every sweep is composed once (about 50 ms each), so a typo in
the fifth temperature of a sweep fails before the first job trains, with a message that
names the key and suggests the fix.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Iterable, Optional

from hydra._internal.utils import get_args_parser
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ValidationError

from lepton_exp.config import CONF_DIR, ROOT_CONFIG
from lepton_exp.config.checkpoints import checkpoint_problem
from lepton_exp.config.compose import compose_config, hydra_context
from lepton_exp.config.registries import SCHEMA_GROUPS
from lepton_exp.config.validate import dotted_keys, validate
from lepton_exp.errors import ConfigError, did_you_mean


class PreflightError(Exception):
    pass


# Module prefixes whose classes a config may name in `_target_` (Hydra instantiates the
# launcher, the sweeper and its sampler from them; lepton-exp itself uses registries).
ALLOWED_TARGETS = ("lepton_exp.", "torch.", "timm.", "transformers.", "torchmetrics.",
                   "pytorch_lightning.", "lightning.", "hydra.", "hydra_plugins.", "optuna.")


def _targets(node, where: str = ""):
    """(dotted key, value) of every ``_target_`` in a config tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if key == "_target_":
                yield path, str(value)
            else:
                yield from _targets(value, path)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _targets(value, f"{where}[{index}]")


def preflight(argv: list[str], explain: bool = True) -> Optional[DictConfig]:
    """Compose every job of the command line; raise PreflightError with one line for the first
    problem. Returns the composed config of a single-job command (None for sweeps and
    commands that run no job). ``explain=False`` (HYDRA_FULL_ERROR=1): composition errors are
    left to Hydra's own report, but the ``_target_`` allow-list is still enforced."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args, _ = get_args_parser().parse_known_args(argv)
    except SystemExit:
        return None  # malformed flags: Hydra's own parser reports them (once, as it prints them)
    if args.cfg and args.multirun:
        raise PreflightError(f"--cfg {args.cfg} shows the config of one job: drop -m/--multirun")
    if (args.help or args.hydra_help or args.info or args.shell_completion
            or args.experimental_rerun):
        return None
    config_name = args.config_name or ROOT_CONFIG
    try:
        parsed = OverridesParser.create().parse_overrides(args.overrides)
    except Exception as error:  # noqa: BLE001 - OverrideParseException and friends
        if not explain:
            return None
        raise PreflightError(f"cannot parse the overrides: {_first_line(error)}") from None
    sweeps = [o for o in parsed if o.is_sweep_override()]
    if explain:
        _check_sweep_flags(parsed, sweeps, args.multirun)
    config_dir, extra = _config_dirs(args)
    with hydra_context(config_dir, fresh=True):
        # (--cfg only prints the config: the files it names need not be there yet)
        composed = [_check(config_name, [*extra, *overrides], explain, files=not args.cfg)
                    for overrides in _candidates(parsed)]
    return composed[0] if not args.multirun and not args.cfg else None


def _check_sweep_flags(parsed: list[Override], sweeps: list[Override], multirun: bool) -> None:
    if sweeps and not multirun:
        raise PreflightError(f"'{sweeps[0].input_line}' is a sweep: add -m (--multirun) to run "
                             "one job per value, or give a single value")
    sampling = [o for o in sweeps if o.value_type == ValueType.INTERVAL_SWEEP]
    # (a sweep preset may bring its own sampling sweeper: sweep=tune_kd)
    if sampling and not any(o.key_or_group in ("hydra/sweeper", "sweep") for o in parsed):
        raise PreflightError(
            f"'{sampling[0].input_line}' needs a sampling sweeper plugin (pip install "
            "hydra-optuna-sweeper, then hydra/sweeper=optuna); the default sweeper takes lists "
            "and ranges: key=1,2,3 or key=range(0,3)")


def _config_dirs(args) -> tuple[str, list[str]]:
    """The primary config directory and the overrides adding ``--config-dir`` to the search
    path, as Hydra will use them (so configs from there are checked too)."""
    primary = str(CONF_DIR)
    if args.config_path:
        path = Path(args.config_path).expanduser()
        if not path.is_absolute():  # Hydra reads a relative one from the calling module
            path = CONF_DIR.parent / path
        primary = str(path.resolve())
    extra = []
    if args.config_dir:
        directory = Path(args.config_dir).expanduser().resolve()
        extra.append(f"hydra.searchpath=[file://{directory}]")
    return primary, extra


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


def _compose(config_name: str, overrides: list[str]):
    # With Hydra's own node, so hydra.* overrides and hydra/launcher=... are checked too.
    return compose_config(overrides, hydra_node=True, config_name=config_name, explain=False)


def _check(config_name: str, overrides: list[str], explain: bool = True,
           files: bool = True) -> Optional[DictConfig]:
    """The composed config of ``overrides``, checked: its values (``validate``) and, with
    ``files``, the checkpoints it names (before Hydra makes a run directory for it)."""
    try:
        cfg = _compose(config_name, overrides)
    except Exception as error:  # noqa: BLE001 - find which override caused it, explain that
        if not explain:
            return None
        raise PreflightError(_explain(config_name, overrides, error)) from None
    unsafe = [f"{where}={target}" for where, target in _targets(
        OmegaConf.to_container(cfg, resolve=False)) if not target.startswith(ALLOWED_TARGETS)]
    if unsafe:
        raise PreflightError(
            f"{unsafe[0]}: only classes from {', '.join(p.rstrip('.') for p in ALLOWED_TARGETS)}"
            " may be instantiated from config (so an override cannot import arbitrary code)")
    with open_dict(cfg):
        del cfg["hydra"]  # Hydra fills its runtime fields later; the schema checks are ours
    if explain:
        try:
            validate(cfg)
        except ConfigError as error:
            raise PreflightError(str(error)) from None
        problem = checkpoint_problem(cfg) if files else None
        if problem:
            raise PreflightError(problem)
    return cfg


def _explain(config_name: str, overrides: list[str], error: Exception) -> str:
    """Which override made composing ``overrides`` fail with ``error``, and why. Composes as
    little as it can (each compose is a few tenths of a second): the shorter prefixes of
    ``overrides``, and the config before the failing one only where the reason needs it."""
    if not overrides:
        return f"the config in {CONF_DIR} does not compose: {_first_line(error)}"
    index, failed, previous = len(overrides) - 1, error, None
    for count in range(1, len(overrides)):
        try:
            current = _compose(config_name, overrides[:count])
        except Exception as prefix_error:  # noqa: BLE001
            index, failed = count - 1, prefix_error
            break
        previous = current
    return _explain_override(config_name, overrides, index, previous, failed)


def _explain_override(config_name: str, overrides: list[str], index: int, before,
                      error: Exception) -> str:
    """Why ``overrides[index]`` failed, given the config ``before`` it (composed from the
    earlier ones; None: composed here if needed, from the config files alone)."""
    line = overrides[index]
    override = OverridesParser.create().parse_override(line)
    key = override.key_or_group
    loader = GlobalHydra.instance().config_loader()
    options = _group_options(loader, key)
    if options:  # group=option
        value = override.value()
        if value is None:
            return f"{key}=null is not an option: leave {key} out to select none"
        if str(value) not in options:
            return (f"unknown option {key}={value}{did_you_mean(str(value), options)}: "
                    f"choose one of {', '.join(options)}")
    elif not override.is_add() and not isinstance(_innermost(error), ValidationError):
        # (a ValidationError is a value the key's type refuses: the key exists)
        if before is None:
            try:
                before = _compose(config_name, [])
            except Exception as broken:  # noqa: BLE001 - the config files themselves
                return f"the config in {CONF_DIR} does not compose: {_first_line(broken)}"
        if key not in dotted_keys(before):
            return _explain_unknown_key(config_name, overrides, index, key, before, loader)
    message = re.sub(r"\s+", " ", _first_line(_innermost(error)))
    return f"invalid override '{line}': {message}"


def _explain_unknown_key(config_name: str, overrides: list[str], index: int, key: str,
                         before, loader) -> str:
    earlier = overrides[:index]
    parent, _, _ = key.rpartition(".")
    parent_node = OmegaConf.select(before, parent) if parent else None
    if isinstance(parent_node, DictConfig) and OmegaConf.get_type(parent_node) is dict:
        return _explain_new_key(config_name, overrides, index, key, before)
    hint = did_you_mean(key, dotted_keys(before))
    group = key.split(".")[0]
    options = _group_options(loader, group)
    if options:  # maybe the key belongs to another option of this group
        # the options' own files first (composing each option takes seconds in all);
        # composed only when that finds none and the key is no near miss either
        owners = [option for option in options if _file_has_key(group, option, key)]
        if not owners and not hint:
            owners = [option for option in options
                      if _has_key(config_name, [*earlier, f"{group}={option}"], key)]
        if owners:
            selector = SCHEMA_GROUPS[group][1] if group in SCHEMA_GROUPS else "name"
            current = OmegaConf.select(before, f"{group}.{selector}", default="?")
            return (f"'{key}' belongs to {group}={', '.join(owners)}, not {group}={current}: "
                    f"select one of those or drop the override")
    return f"unknown config key '{key}'{hint}: list the keys with `lepton-exp --cfg job`"


def _explain_new_key(config_name: str, overrides: list[str], index: int, key: str,
                     before) -> str:
    """A key missing from a free-form node (``model.kwargs``, ``distill.terms.kd``): a typo of
    a key that is there comes first, then adding it with a plus where the checks take it."""
    parent = key.rpartition(".")[0]
    siblings = [k for k in dotted_keys(before) if k.rpartition(".")[0] == parent]
    hint = did_you_mean(key, siblings)
    plus = [*overrides[:index], f"+{overrides[index]}", *overrides[index + 1:]]
    try:  # what the checks say of the key once added (distill terms take known options only)
        cfg = _compose(config_name, plus)
        with open_dict(cfg):
            del cfg["hydra"]
        validate(cfg)
    except ConfigError as error:
        if key in str(error):
            return str(error)
    except Exception:  # noqa: BLE001 - another override fails too: explain this one alone
        pass
    if hint:
        return (f"unknown config key '{key}'{hint}: correct the name, or add a new key with a "
                f"plus, +{key}=...")
    return f"'{key}' is not set yet: add it with a plus, +{key}=..."


def _file_has_key(group: str, option: str, key: str) -> bool:
    """Whether ``conf/<group>/<option>.yaml`` sets ``key`` (``<group>.<path>``): in the file
    itself, a schema it puts ``@_here_`` (data sets) or a sibling option it builds on."""
    return key.partition(".")[2] in dotted_keys(_option_node(group, option))


def _option_node(group: str, option: str, depth: int = 0):
    path = CONF_DIR / group / f"{option}.yaml"
    if depth > 5 or not path.is_file():
        return OmegaConf.create()
    node = OmegaConf.load(path)
    parts = []
    for entry in node.pop("defaults", None) or []:
        if not isinstance(entry, str) or entry == "_self_":
            continue
        name = entry.removesuffix("@_here_")
        if name.startswith("/"):  # a stored schema (lepton_exp.config.store)
            with contextlib.suppress(Exception):
                parts.append(ConfigStore.instance().load(f"{name[1:]}.yaml").node)
        else:
            parts.append(_option_node(group, name, depth + 1))
    return OmegaConf.merge(*parts, node) if parts else node


def _has_key(config_name: str, overrides: list[str], key: str) -> bool:
    try:
        return key in dotted_keys(_compose(config_name, overrides))
    except Exception:  # noqa: BLE001 - that option does not compose with the others
        return False


def _group_options(loader, name: str) -> list[str]:
    """The options of group ``name``, sorted; [] when it is not a group. One lookup: Hydra
    copies its config repository for each (walking all the groups took 1.5 s)."""
    return sorted(loader.get_group_options(name))


def _innermost(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
