"""This process among others: DDP ranks started by someone else, the cores it may use.

Low in the layers (it imports nothing of lepton_exp): the teacher cache and the DDP launcher
both ask it."""

from __future__ import annotations

import os

WORKER_ENV = "LEPTON_DDP_WORKER"  # set in the DDP worker processes lepton-exp starts


def started_externally() -> bool:
    """Whether this process is one rank of several started by someone else (our own launch,
    torchrun, or SLURM tasks): then it runs the stage itself instead of launching."""
    if os.environ.get(WORKER_ENV) or os.environ.get("TORCHELASTIC_RUN_ID"):
        return True
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1


def cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
