"""``lepton-exp``: the Hydra app over conf/.

Bad configuration is caught before anything heavy is imported: the overrides are composed
once up front (every value of a sweep too), and any problem is printed as one line that
says what to change, with exit code 2. ``HYDRA_FULL_ERROR=1`` shows Hydra's own errors and
full stack traces instead.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import NoReturn

import hydra
from omegaconf import DictConfig

from lepton_exp import __version__
from lepton_exp.config import CONF_DIR, ROOT_CONFIG
from lepton_exp.config.naming import preset_params, swept_keys
from lepton_exp.config.preflight import PreflightError, preflight
from lepton_exp.config.store import register_configs
from lepton_exp.digest import short_hash
from lepton_exp.errors import LeptonError, Stopped
from lepton_exp.processes import collector_paused_while_importing, handle_stop_signals
from lepton_exp.tracking.rundir import discard_unstarted_job, unfinished_run


def _full_errors() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _fail(message: str) -> NoReturn:
    print(f"lepton-exp: error: {message}", file=sys.stderr)
    discard_unstarted_job()  # a config error inside the job: no run directory left behind
    sys.exit(2)


def _stopped(error: KeyboardInterrupt) -> NoReturn:
    """Exit as a process killed by the signal would (130 Ctrl-C, 143 SIGTERM: a cluster sees
    a pre-empted job, a sweep stops here), with one line instead of a stack trace; the run
    saved what it needs to continue (its record says ``interrupted``)."""
    stopped = error if isinstance(error, Stopped) else Stopped(signal.SIGINT)
    print(f"lepton-exp: stopped by {stopped.source}: run the same command again to continue "
          "from the last checkpoint", file=sys.stderr)
    sys.exit(stopped.exit_code)


@hydra.main(config_path=str(CONF_DIR), config_name=ROOT_CONFIG, version_base="1.3")
def _app(cfg: DictConfig) -> float | None:
    with collector_paused_while_importing():
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        from lepton_exp.app.run import run

    try:
        record = run(cfg)
    except LeptonError as error:
        if _full_errors():
            raise
        _fail(str(error))  # also kept in the run record's "error" field
    except SIGTERMException:  # Lightning's own stop, where our handler was not installed
        _stopped(Stopped(signal.SIGTERM))
    except KeyboardInterrupt as error:
        _stopped(error)
    return sweep_objective(record.get("metrics", {}))


def sweep_objective(metrics: dict) -> float | None:
    """What Hydra sweepers maximise: the best validation value of the metric that picks the
    best epoch (``val/acc_best``; GLUE CoLA ``val/mcc_best``, STS-B ``val/pearson_best``)."""
    return next((value for key, value in metrics.items()
                 if key.startswith("val/") and key.endswith("_best")), None)


# Flags without a value that may sit anywhere on the command line. Hydra's argparse takes
# overrides only as one block, so `lepton-exp a=1 -m b=2,3` would fail on `b=2,3`.
_MOVABLE_FLAGS = ("-m", "--multirun", "--resolve")


def is_multirun(argv: list[str]) -> bool:
    return any(a in ("-m", "--multirun") for a in argv)


def flags_first(argv: list[str]) -> list[str]:
    return [a for a in argv if a in _MOVABLE_FLAGS] + [a for a in argv
                                                       if a not in _MOVABLE_FLAGS]


# How jobs are executed, not what they compute: changing these keeps a sweep's directory.
_EXECUTION_ONLY = ("hydra/launcher=", "hydra.launcher.", "hydra.sweep.", "hydra.job_logging",
                   "hydra.verbose", "resume=")


def sweep_dir_override(argv: list[str]) -> list[str]:
    """``hydra.sweep.dir`` named after the command line, unless given: re-running the same
    sweep goes to the same directory, where complete runs are skipped and unfinished ones
    continue (``resume``). The name shows the preset(s) and a hash of the overrides."""
    if not is_multirun(argv) or any(a.startswith("hydra.sweep.dir=") for a in argv):
        return []
    # Sorted: the order of the overrides changes the job numbers, not the jobs (their
    # directories are named by content, conf/hydra/default.yaml).
    overrides = sorted(a for a in argv if a not in _MOVABLE_FLAGS
                       and not a.startswith(_EXECUTION_ONLY))
    label = "-".join(a.split("=", 1)[1] for a in overrides
                     if a.startswith(("experiment=", "sweep=")) and "," not in a) or "sweep"
    digest = short_hash("\n".join(overrides))
    return [f"hydra.sweep.dir=${{paths.output_dir}}/multiruns/{label}-{digest}"]


# Hydra's flags that take a value (the next argument is not an override).
_VALUE_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn",
                "--experimental-rerun")


def overrides_only(argv: list[str]) -> list[str]:
    """The overrides of a command line, without Hydra's flags and their values."""
    overrides, skip = [], False
    for arg in argv:
        if skip or arg.startswith("-"):
            skip = not skip and arg in _VALUE_FLAGS
            continue
        overrides.append(arg)
    return overrides


def name_keys_override(argv: list[str]) -> list[str]:
    """A multirun's runs are named after what it varies (``name_keys``), unless names or
    ``name_keys`` are given: two runs of ``distill.temperature=2,4`` are
    ``distill-kd-T2-...`` and ``distill-kd-T4-...`` in W&B, their directories and tables."""
    if not is_multirun(argv) or any(
            a.startswith(("name=", "name_keys=", "+name_keys=")) for a in argv):
        return []
    try:
        keys = swept_keys(overrides_only(argv), CONF_DIR)
    except Exception:  # noqa: BLE001 - a malformed override: preflight reports it
        return []
    return [f"name_keys=[{','.join(keys)}]"] if keys else []


def main() -> None:
    handle_stop_signals()
    try:
        _main()
    except KeyboardInterrupt as error:  # stopped before or after the run (composing, Hydra)
        _stopped(error)


def _main() -> None:
    sys.argv[1:] = flags_first(sys.argv[1:])
    sys.argv[1:] += sweep_dir_override(sys.argv[1:])
    sys.argv[1:] += name_keys_override(sys.argv[1:])
    if is_multirun(sys.argv[1:]):
        # a sweep preset's grid, explicit: the config check sees every job's values
        # (`sweep=glue` sets data.task), and Hydra builds the same grid from it
        sys.argv[1:] += [f"{key}={value}" for key, value in
                         preset_params(overrides_only(sys.argv[1:]), CONF_DIR).items()]
    if "--version" in sys.argv[1:]:
        print(f"lepton-exp {__version__} (hydra-core {hydra.__version__})")
        return
    try:
        # (with HYDRA_FULL_ERROR=1 only the _target_ allow-list: Hydra reports the rest)
        job = preflight(sys.argv[1:], explain=not _full_errors())
    except PreflightError as error:
        _fail(str(error))
    if job is not None and job.resume and not any(
            a.startswith("hydra.run.dir=") for a in sys.argv[1:]):
        sys.argv[1:] += continue_unfinished(job)
    register_configs()
    _app()


def continue_unfinished(job: DictConfig) -> list[str]:
    """``hydra.run.dir`` of the newest unfinished run of this same config, if there is one: a
    single run's directory is named by its start time, so the same command would otherwise
    start afresh beside the interrupted attempt instead of continuing it."""
    found = unfinished_run(job)
    if found is None:
        return []
    print(f"lepton-exp: continuing the unfinished run in {found} (resume=false starts a new "
          "one)", file=sys.stderr)
    return [f"hydra.run.dir={found}"]


if __name__ == "__main__":
    main()
