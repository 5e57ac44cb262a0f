"""The W&B logger that never takes a run down: if W&B fails during the run (a full disk under
``wandb/``, a dead W&B service), ``SafeWandbLogger`` stops calling W&B, sends the rest of the
run's metrics to a CSV logger in the same place (``<run_dir>/csv``) and says so once.

Private to the logger entries (the underscore keeps it out of ``LOGGERS``); importing it does
not import Lightning or wandb.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lepton_exp.tracking.loggers.csv import csv_in

if TYPE_CHECKING:
    from pytorch_lightning.loggers import Logger

log = logging.getLogger(__name__)


class _SafeWandb:
    """What makes a ``WandbLogger`` safe (see ``safe_wandb_logger_class``): every call into
    W&B is guarded; the first failure is logged once, then the logger stops calling W&B and
    sends what follows to a CSV logger in ``<fallback_dir>/csv`` (created on first need)."""

    def __init__(self, *args: Any, fallback_dir: str | Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fallback_dir = Path(fallback_dir)
        self._fallback: "Logger | None" = None
        self._failure: str | None = None  # what failed first, e.g. "logging metrics (OSError: ..)"
        self._hparams: list[Any] = []  # logged hyperparameters, replayed into the CSV fallback

    @property
    def failure(self) -> str | None:
        """What failed first (None while W&B works)."""
        return self._failure

    @property
    def fallback(self) -> "Logger | None":
        """The CSV logger that took over after a failure (None while W&B works)."""
        return self._fallback

    def _fail(self, action: str, error: Exception, fallback: bool = True,
              finished: bool = False) -> "Logger | None":
        """Record the failure (and warn) the first time; the CSV fallback, created if needed
        (``fallback``). ``finished``: the failure came after training (closing the run)."""
        if self._failure is None:
            self._failure = f"{action} ({_describe(error)})"
            if finished:
                log.warning("W&B failed while %s; the run's results are in its run record, "
                            "the W&B run may be incomplete", self._failure)
            else:
                log.warning("W&B failed while %s; W&B logging stops for this run and continues "
                            "to CSV in %s", self._failure, self._fallback_dir / "csv")
        return self._csv() if fallback else self._fallback

    def _csv(self) -> "Logger":
        if self._fallback is None:
            self._fallback = csv_in(self._fallback_dir)
            for params in self._hparams:
                try:
                    self._fallback.log_hyperparams(params)
                except Exception:  # noqa: BLE001 - hyperparameters are in the run record too
                    pass
        return self._fallback

    def _guard(self, action: str, call: Callable[..., Any], *args: Any,
               fallback: bool = False, **kwargs: Any) -> bool:
        """Call W&B unless it failed already; False when it did not run or failed (then
        recorded by ``_fail``, creating the CSV fallback when ``fallback``)."""
        if self._failure is not None:
            return False
        try:
            call(*args, **kwargs)
            return True
        except Exception as error:  # noqa: BLE001 - W&B must not stop training
            self._fail(action, error, fallback=fallback)
            return False

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        if not self._guard("logging metrics", super().log_metrics, metrics, step,
                           fallback=True):
            self._csv().log_metrics(metrics, step)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self._hparams.append(params)
        if not self._guard("logging hyperparameters", super().log_hyperparams, params, *args,
                           fallback=True, **kwargs):
            self._csv().log_hyperparams(params)

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        self._guard("logging the model graph", super().log_graph, model, input_array)

    def watch(self, *args: Any, **kwargs: Any) -> None:
        self._guard("watching the model", super().watch, *args, **kwargs)

    # Tables, images, audio, video: W&B objects, nothing a CSV file can hold.
    def log_table(self, *args: Any, **kwargs: Any) -> None:
        self._guard("logging media (log_table)", super().log_table, *args, **kwargs)

    def log_text(self, *args: Any, **kwargs: Any) -> None:
        self._guard("logging media (log_text)", super().log_text, *args, **kwargs)

    def log_image(self, *args: Any, **kwargs: Any) -> None:
        self._guard("logging media (log_image)", super().log_image, *args, **kwargs)

    def log_audio(self, *args: Any, **kwargs: Any) -> None:
        self._guard("logging media (log_audio)", super().log_audio, *args, **kwargs)

    def log_video(self, *args: Any, **kwargs: Any) -> None:
        self._guard("logging media (log_video)", super().log_video, *args, **kwargs)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self._guard("registering a checkpoint", super().after_save_checkpoint,
                    checkpoint_callback)

    def save(self) -> None:
        if not self._guard("saving", super().save, fallback=True) \
                and self._fallback is not None:
            self._fallback.save()

    def finalize(self, status: str) -> None:
        # (WandbLogger.finalize logs checkpoints as artifacts with log_model)
        if not self._guard("finalizing (uploading checkpoints)", super().finalize, status) \
                and self._fallback is not None:
            self._fallback.finalize(status)

    def _finish_run(self, summary: dict[str, Any]) -> None:
        """Push ``summary`` to the W&B summary and finish the W&B run; after a failure (now or
        earlier) only the CSV fallback is closed and W&B is not called again."""
        if self._failure is None:
            action = "updating the run summary"
            try:
                self.experiment.summary.update(summary)
                action = "finishing the run"
                self.experiment.finish()
                return
            except Exception as error:  # noqa: BLE001 - tracking must not fail a finished run
                self._fail(action, error, fallback=False, finished=True)
        if self._fallback is not None:
            self._fallback.finalize("success")
        self._detach()

    def _close_failed(self) -> None:
        """Close after a failed run: finish the W&B run with exit code 1, unless W&B failed."""
        if self._failure is None:
            try:
                self.experiment.finish(exit_code=1)
                return
            except Exception as error:  # noqa: BLE001 - the run's own error is what matters
                self._fail("finishing the failed run", error, fallback=False, finished=True)
        if self._fallback is not None:
            self._fallback.finalize("failed")
        self._detach()

    def _detach(self) -> None:
        """Forget a W&B run that failed, without calling it: otherwise the next run in this
        process (a sweep) would be handed the broken run by WandbLogger / wandb.init."""
        run = self._experiment
        if run is None:
            return
        try:
            import wandb
            from wandb.sdk.lib import module

            manager = getattr(run, "_wl", None)
            if manager is not None and hasattr(manager, "remove_active_run"):
                manager.remove_active_run(run)
            if wandb.run is run:
                module.unset_globals()
        except Exception:  # noqa: BLE001 - best effort on wandb internals
            pass


@functools.cache
def safe_wandb_logger_class(base: type) -> type:
    """``SafeWandbLogger``: ``base`` (Lightning's ``WandbLogger``) whose failures during the run
    never reach training (see ``_SafeWandb``). Built on first use, so that importing this
    module does not import Lightning; ``base`` is read when the logger is built."""
    return type("SafeWandbLogger", (_SafeWandb, base), {"__module__": __name__,
                                                       "__qualname__": "SafeWandbLogger"})


def __getattr__(name: str) -> Any:
    if name == "SafeWandbLogger":  # also lepton_exp.tracking.loggers.SafeWandbLogger
        from pytorch_lightning.loggers import WandbLogger

        return safe_wandb_logger_class(WandbLogger)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _describe(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _has_netrc_key() -> bool:
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")
