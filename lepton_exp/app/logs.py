"""Where a run's log lines go: the console keeps the progress bar, warnings and our report;
the run's log file (Hydra's ``<run dir>/lepton-exp.log``, conf/hydra/default.yaml) keeps
everything: our lines, Lightning's INFO lines (accelerator banner, tips, checkpoint
restores) and Python warnings.

Lightning gives its loggers a console handler of their own and stops them passing lines on
to the root logger (which holds the log file) when it is imported before logging is set up,
as the CLI's preflight does for every distillation run: their lines never reached the file.
:func:`route_logs` sends them through the root logger again.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

from lepton_exp.processes import WORKER_ENV

LOG_FILE_ENV = "LEPTON_RUN_LOG"  # the run's log file, for the DDP workers this run starts
FILE_ONLY = {"file_only": True}  # `log.info(..., extra=FILE_ONLY)`: a line for the file alone
WARNINGS_LOGGER = "py.warnings"  # what logging.captureWarnings would log them as
FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # conf/hydra's (Hydra default)
# Loggers Lightning sets up itself (lightning_fabric, lightning.* : the unified package)
_LIGHTNING = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric")


class FileOnly(logging.Filter):
    """On console handlers: drops the lines that the run's log file alone keeps."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "file_only", False) or record.name == WARNINGS_LOGGER:
            return False  # (warnings: printed by their own printer already)
        return record.levelno >= logging.WARNING or not record.name.startswith(
            ("pytorch_lightning", "lightning"))


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(
        handler, logging.FileHandler)


def route_logs() -> None:
    """Lightning's lines and Python warnings to the run's log file too, once logging has
    one (Hydra's job logging; in a DDP worker, rank zero joins its launcher's file); the
    console filtered to what it showed before. Idempotent: every run of a process calls it."""
    root = logging.getLogger()
    _join_launcher_log(root)
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    consoles = [h for h in root.handlers if _is_console(h)]
    if files:
        os.environ[LOG_FILE_ENV] = files[0].baseFilename
        for name in _LIGHTNING:
            logger = logging.getLogger(name)
            for handler in [h for h in logger.handlers if _is_console(h) and consoles]:
                logger.removeHandler(handler)  # the root's console prints them (filtered)
            logger.propagate = True
        _log_warnings()
    own = [h for name in _LIGHTNING for h in logging.getLogger(name).handlers]
    for handler in [*consoles, *own]:
        if _is_console(handler) and not any(isinstance(f, FileOnly) for f in handler.filters):
            handler.addFilter(FileOnly())
    # Raised inside Lightning on every run with current torch; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _join_launcher_log(root: logging.Logger) -> None:
    """A DDP worker of rank zero writes to the log file of the process that started it
    (which set LOG_FILE_ENV); its warnings still reach the console, as they did unhandled."""
    path = os.environ.get(LOG_FILE_ENV)
    # (RANK, set by the elastic launcher: Lightning's rank_zero_only learns it only later)
    if not path or not os.environ.get(WORKER_ENV) or root.handlers or os.environ.get(
            "RANK", "0") != "0":
        return
    to_file = logging.FileHandler(path)
    to_file.setFormatter(logging.Formatter(FORMAT))
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)
    root.addHandler(to_file)
    root.addHandler(console)
    root.setLevel(logging.INFO)


def _log_warnings() -> None:
    """Python warnings printed as before, and logged to the file as well (the consoles'
    FileOnly filter leaves them out there)."""
    shown = warnings.showwarning
    if getattr(shown, "logs_too", False):
        return

    def show_and_log(message: Any, category: type, filename: str, lineno: int,
                     file: Any = None, line: str | None = None) -> None:
        shown(message, category, filename, lineno, file, line)
        text = warnings.formatwarning(message, category, filename, lineno, line)
        logging.getLogger(WARNINGS_LOGGER).warning("%s", text.rstrip())

    show_and_log.logs_too = True  # type: ignore[attr-defined]
    warnings.showwarning = show_and_log
