"""Processes and threads: DDP worker launch on one node, torch threads per parallel job.

``trainer=ddp`` on one node: the Hydra job (one per sweep run, whatever the launcher) starts
``trainer.devices`` worker processes with torch's elastic launcher (what ``torchrun`` runs)
and each worker runs the *whole* stage: data, teachers, fit, tests. Lightning sees ranks
created from outside and only joins them up. Nothing re-executes the command line, so a
Hydra multirun gets no extra output directories (Lightning's own ``ddp`` launcher re-runs
``sys.argv``, which under ``-m`` starts the sweep again: lightning-hydra-template #393).
Only rank zero writes the run record, the export, the teacher cache and W&B.

Multi-node runs need ranks started by the cluster (SLURM: ``tasks_per_node=devices``, see
conf/hydra/launcher/slurm.yaml); Lightning's SLURM environment picks them up.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from lepton_exp.errors import ConfigError, LeptonError
from lepton_exp.processes import (WORKER_ENV, cores, load_average, local_processes,
                                  machine_cores, others_recent_cores, started_externally)
from lepton_exp.tracking.record import RECORD_NAME, read_record

log = logging.getLogger(__name__)
T = TypeVar("T")
# Busy at the start of a run: other processes keep at least this many cores busy beyond
# those this job leaves free (one competing single-threaded process is about 1).
BUSY_MARGIN = 0.5


def process_count(trainer_cfg) -> int:
    """Training processes per node that ``trainer_cfg`` asks for (1 unless a ddp strategy,
    or ``auto`` with several devices: Lightning would choose DDP and re-run the command)."""
    strategy = str(trainer_cfg.strategy)
    if not strategy.startswith(("ddp", "auto")):
        return 1
    devices = trainer_cfg.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if isinstance(devices, int) and devices >= 1:
        return devices
    if not isinstance(devices, (str, int)) and len(devices) >= 1:  # device ids: [0, 1]
        return len(devices)
    if strategy == "auto" and isinstance(devices, str):
        return 1  # "auto" (one device), or a value Lightning rejects with its own message
    raise ConfigError(f"trainer.devices={devices} with trainer.strategy={strategy}: give "
                      "the number of processes per node, e.g. trainer.devices=4")


def needs_launch(cfg) -> bool:
    """True when this job must start DDP worker processes before running the stage."""
    processes = process_count(cfg.trainer)
    if processes * cfg.trainer.num_nodes <= 1 or started_externally():
        return False
    if cfg.trainer.num_nodes > 1:
        raise ConfigError(f"trainer.num_nodes={cfg.trainer.num_nodes} needs ranks started by "
                          "the cluster: run with hydra/launcher=slurm and "
                          "hydra.launcher.tasks_per_node=${trainer.devices} (README: Multi-GPU)")
    return True


def parallel_jobs() -> int:
    """Jobs the Hydra launcher runs at once on this machine (1 outside a local parallel one)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return 1
    launcher = HydraConfig.get().launcher
    if "joblib" not in str(launcher.get("_target_", "")):
        return 1
    jobs = int(launcher.get("n_jobs") or 1)
    return cores() if jobs < 0 else jobs  # joblib: -1 means one job per core


def threads_per_process(processes: int) -> int | None:
    """Torch threads for each of ``processes`` sharing this machine's cores (None: one
    process, torch's default). Two 2-thread processes on 2 cores ran 10-100x slower than
    two 1-thread ones (../shared/INSTALL_NOTES.md)."""
    return None if processes <= 1 else max(1, cores() // processes)


@functools.cache
def torch_default_threads() -> int:
    """Torch's own thread count when this process's first run began: every core it may use
    (physical cores where torch prefers them; OMP_NUM_THREADS when set)."""
    import torch

    return torch.get_num_threads()


def default_threads() -> int:
    """The ``threads=null`` default: this process's share of the cores, shared with the jobs
    a local parallel Hydra launcher runs at once and the torchrun ranks on this node."""
    return threads_per_process(parallel_jobs() * local_processes()) or torch_default_threads()


def configure_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads for this run: ``requested`` (the ``threads`` key) when
    given, else :func:`default_threads` (a DDP worker keeps the share its launcher gave it);
    warn once when other processes already keep the cores busy. Returns the thread count."""
    import torch

    torch_default_threads()  # before this process first changes it
    if requested is not None:
        threads = requested
    elif os.environ.get(WORKER_ENV):
        threads = torch.get_num_threads()
    else:
        threads = default_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if os.environ.get("LOCAL_RANK", "0") == "0":  # one line per run, not per rank
        warn_if_machine_busy(threads, parallel_jobs() * local_processes())
    return torch.get_num_threads()


def own_recent_load(threads: int) -> float:
    """This process's part of the 1-minute load average, estimated from its CPU time over
    the minute the average spans (at most its threads: a process that used more CPU earlier
    is taken as running all of them)."""
    return min(threads, time.process_time() / 60.0)


def warn_if_machine_busy(threads: int, processes: int) -> bool:
    """One warning line (and True) when other processes already load the machine beyond the
    cores this job's ``processes`` of ``threads`` leave free: the cores others kept busy
    while this process started (:func:`others_recent_cores`) less this job's sibling
    processes (taken as running); without the kernel's CPU accounting, the 1-minute load
    average less those and this process (:func:`own_recent_load`)."""
    siblings = (processes - 1) * threads
    measured = others_recent_cores()
    if measured is not None:
        others = measured - siblings
        seen = f"other processes kept about {others:.1f} cores busy while this run started"
    else:
        load = load_average()
        if load is None:
            return False
        others = load - own_recent_load(threads) - siblings
        seen = f"load average {load:.1f}, about {others:.1f} of it from other processes"
    free = max(0, machine_cores() - processes * threads)
    if others < free + BUSY_MARGIN:
        return False
    hint = "run with threads=1, or wait" if threads > 1 else "wait"
    log.warning("this machine is busy (%s, %d cores): this run (threads=%d) will be slower "
                "and time its latencies under competition: %s for them to finish", seen,
                machine_cores(), threads, hint)
    return True


def measured_alone(measure: Callable[[], T]) -> T:
    """``measure()`` taken by rank zero with all of the machine's cores while the other DDP
    ranks wait, its result shared with them (timings comparable to a one-process run);
    just ``measure()`` outside DDP."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return measure()
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        threads = torch.get_num_threads()
        torch.set_num_threads(cores())
        try:
            box[0] = measure()
        finally:
            torch.set_num_threads(threads)
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ------------------------------------------------------------------------------ launching
def launch(run: Callable[..., dict[str, Any]], cfg, run_dir: Path,
           overrides: list[str] | None, resume: Path | None) -> dict[str, Any]:
    """``run(cfg, run_dir=..., overrides=..., resume=...)`` in ``trainer.devices`` worker
    processes (``run`` a module-level function: it travels to them by reference); rank
    zero's run record."""
    from omegaconf import OmegaConf
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    processes = process_count(cfg.trainer)
    threads = cfg.get("threads") or threads_per_process(parallel_jobs() * processes)
    config = OmegaConf.to_container(cfg, resolve=True)
    # The elastic agent logs every child failure at length; our one-line error says it all.
    elastic_log = logging.getLogger("torch.distributed.elastic")
    level = elastic_log.level
    elastic_log.setLevel(logging.CRITICAL)
    launch_cfg = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=f"lepton-{os.getpid()}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
        monitor_interval=0.5, start_method="spawn")
    log.info("DDP: starting %d worker processes for %s", processes, run_dir)
    try:
        results = elastic_launch(launch_cfg, _worker)(run, config, str(run_dir), overrides,
                                                      threads, resume)
    except ChildFailedError as error:
        record = read_record(run_dir) if (run_dir / RECORD_NAME).exists() else {}
        codes = ", ".join(f"rank {r} exit code {f.exitcode}" for r, f in error.failures.items())
        raise LeptonError(f"DDP run failed: {record.get('error') or codes} (see {run_dir})"
                          ) from None
    finally:
        elastic_log.setLevel(level)
    return results[0]


def _worker(run: Callable[..., dict[str, Any]], config: dict, run_dir: str,
            overrides: list[str] | None, threads: int | None, resume: Path | None
            ) -> dict[str, Any]:
    """One rank: the whole stage, in a fresh interpreter."""
    import sys

    import torch
    from omegaconf import OmegaConf

    os.environ[WORKER_ENV] = "1"
    # This rank's number, before anything asks which rank writes: Lightning read it from the
    # environment when it was imported, which (unpickling this call) was before the launcher
    # set RANK here, so every rank took itself for rank 0 until the Trainer said otherwise,
    # and two ranks wrote the run's files at once (model.safetensors' rename raced).
    from pytorch_lightning.utilities import rank_zero_only  # (Lightning's one, all packages)

    rank_zero_only.rank = int(os.environ.get("RANK", "0"))
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return run(OmegaConf.create(config), run_dir=Path(run_dir), overrides=overrides,
                   resume=resume or False)
    except LeptonError:  # in the run record; the parent reports it in one line
        sys.exit(2)
