"""Jobs of one sweep that compute the same thing run once: the first claims the settings, the
others wait for it and leave a record that points to it (``same_as``), with its metrics.

``-m distill=none,kd distill.temperature=2,4`` has two ``distill=none`` jobs that differ only
in a temperature nothing reads (config.identity.same_computation): one trains, one points.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

from lepton_exp.config.identity import same_computation
from lepton_exp.digest import short_hash
from lepton_exp.tracking.record import RECORD_NAME, write_json_atomic
from lepton_exp.tracking.rundir import LOCK_NAME, earlier_record, is_running

log = logging.getLogger(__name__)
CLAIMS = ".same_settings"  # in the sweep directory: settings digest -> the run dir running it


def sweep_dir() -> Optional[Path]:
    """This multirun's directory, when Hydra runs this job as part of one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir)


def _is_the_job(run_dir: Path) -> bool:
    """Whether ``run_dir`` is the sweep job's own run (not a teacher it trains on the way)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir).resolve() == run_dir.resolve()


def claim(run_dir: Path, config: dict) -> Optional[Path]:
    """The run directory of another job of this sweep that runs (or ran) these settings, or
    None: this job claims them and runs. A claim whose run failed or was stopped, and that no
    process runs now, passes to this job."""
    from filelock import FileLock

    sweep = sweep_dir()
    if sweep is None or not _is_the_job(run_dir):
        return None
    (sweep / CLAIMS).mkdir(parents=True, exist_ok=True)
    key = sweep / CLAIMS / short_hash(json.dumps(same_computation(config), sort_keys=True,
                                                 default=str))
    here = str(run_dir.resolve())
    with FileLock(f"{key}.lock"):
        owner = key.read_text().strip() if key.exists() else here
        if owner != here and (is_running(Path(owner)) or earlier_record(Path(owner)).get(
                "status") == "completed"):
            return Path(owner)
        key.write_text(here)
    return None


def point_to(owner: Path, record: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Wait for ``owner`` to finish, then write this job's record pointing to it (its
    metrics copied, ``same_as`` its directory); None when the owner did not complete (this
    job then runs the settings itself)."""
    from filelock import FileLock

    log.warning("%s computes the same as %s: waiting for it instead of running it again",
                record["name"], owner)
    with FileLock(str(owner / LOCK_NAME)):  # held by the process running the owner
        pass
    done = earlier_record(owner)
    if done.get("status") != "completed":
        return None
    run_dir = Path(record["run_dir"])
    record.update(status="completed", same_as=str(owner), wall_time_s=0.0,
                  metrics=done.get("metrics", {}),
                  **{key: done[key] for key in ("num_params", "model_size_bytes", "exported")
                     if key in done})
    write_json_atomic(run_dir / RECORD_NAME, record)
    print(f"lepton-exp: {record['name']} computes the same as {owner}: not run again "
          f"(its record points there: same_as)")
    return record
