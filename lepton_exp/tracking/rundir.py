"""Run directories: the lock held while a process runs a directory, and the unfinished run a
re-run of the same command continues (same run: same computed settings, config.identity).

Imported by the CLI before Hydra sets up logging, so nothing here imports Lightning.
"""

from __future__ import annotations

import contextlib
import glob
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lepton_exp.config.checkpoints import unreadable
from lepton_exp.config.identity import computed_settings, to_container
from lepton_exp.errors import ConfigError, one_line
from lepton_exp.tracking.record import RECORD_NAME, read_record

LOCK_NAME = ".lock"  # held by the process running a run directory (run_lock)


def _try_lock(run_dir: Path):
    """The run directory's lock, acquired, or None when another process holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(run_dir / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Held while a process runs ``run_dir``: a second process given the same directory (the
    same sweep started twice, a re-run while the first still trains) stops with a clear error
    instead of writing into it. The OS drops the lock when its holder dies, even by SIGKILL."""
    lock = _try_lock(run_dir)
    if lock is None:
        raise ConfigError(f"{run_dir} is being run by another process right now: wait for it "
                          "to finish (a re-run then continues or skips it)")
    try:
        yield
    finally:
        lock.release()


def is_running(run_dir: Path) -> bool:
    """Whether another process holds ``run_dir`` now (see ``run_lock``)."""
    lock = _try_lock(run_dir)
    if lock is None:
        return True
    lock.release()
    return False


def unfinished_run(cfg: DictConfig) -> Path | None:
    """The newest run directory under ``paths.output_dir/runs`` (where single runs go,
    conf/hydra/default.yaml) holding an unfinished run of ``cfg`` that has something to
    continue from, and that no process is running now."""
    config = computed_settings(to_container(cfg))
    candidates = []
    for path in Path(cfg.paths.output_dir).glob(f"runs/*/*_{glob.escape(str(cfg.name))}/"
                                                 f"{RECORD_NAME}"):
        record = earlier_record(path.parent)
        started = any(path.parent.glob("**/checkpoints/last.ckpt"))  # a pipeline: its steps'
        if (record.get("status") not in (None, "completed") and started
                and computed_settings(record.get("config") or {}) == config
                and not is_running(path.parent)):
            candidates.append((str(record.get("started_at")), path.parent))
    return max(candidates)[1] if candidates else None


def check_checkpoint(path: Path) -> Any:
    """The checkpoint at ``path`` as tensors and plain values (memory-mapped), or a clear error
    when it does not read back whole or holds more (checkpoints are written by rename, so this
    means a damaged disk or a file put there by hand)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001 - truncated zip, foreign pickle, ...
        what = unreadable(path, error) or f"does not load ({one_line(error)[:80]})"
        raise ConfigError(f"cannot continue from {path}: the file {what}; run with "
                          "resume=false to start this run again (the attempt is kept aside)"
                          ) from None


def discard_unstarted_job() -> bool:
    """Remove the directory Hydra made for this job when it holds nothing but Hydra's own files
    (its ``.hydra/`` and the job's log): a run stopped by a config check, before it began,
    leaves no directory behind. Anything else in it (a run record, checkpoints: this
    attempt's or an earlier run's) keeps it. Returns whether it was removed."""
    import shutil

    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    hydra_files = {str(hydra.output_subdir), f"{hydra.job.name}.log"}
    try:
        names = {path.name for path in run_dir.iterdir()}
    except OSError:
        return False
    if not names <= hydra_files:
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


def earlier_record(run_dir: Path) -> dict[str, Any]:
    try:
        return read_record(run_dir)
    except (OSError, ValueError):
        return {}
