"""This process among others: DDP ranks started by someone else, the cores it may use and
how busy others keep them, the signals that stop it.

Low in the layers (it imports only lepton_exp.errors): the teacher cache, the DDP launcher
and the training loop's stop handling ask it."""

from __future__ import annotations

import gc
import os
import time
from contextlib import contextmanager
from typing import Iterator

WORKER_ENV = "LEPTON_DDP_WORKER"  # set in the DDP worker processes lepton-exp starts


@contextmanager
def collector_paused_while_importing() -> Iterator[None]:
    """Python's garbage collector off while torch, Lightning, timm, ... import (~600k objects),
    then those objects left out of its later collections (``gc.freeze``): each full
    collection during the imports scans everything loaded so far, a second or more in all
    at start-up. Module-level objects live as long as the process anyway."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def started_externally() -> bool:
    """Whether this process is one rank of several started by someone else (our own launch,
    torchrun, or SLURM tasks): then it runs the stage itself instead of launching."""
    if os.environ.get(WORKER_ENV) or os.environ.get("TORCHELASTIC_RUN_ID"):
        return True
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1


def started_at() -> float:
    """When this process started, in seconds since the epoch: the kernel's record on Linux
    (the interpreter's own start-up included), else when lepton_exp was first imported."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            # field 22, after the parenthesised command name (which may hold spaces)
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        import lepton_exp

        return lepton_exp.IMPORTED_AT


def cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# Stop signals. Ctrl-C or SIGTERM inside a training step would leave the weights half
# updated and the checkpoint saved on the way out inconsistent with its step count (the
# resumed run then drifts from an uninterrupted one), so while a step runs the signal only
# asks to stop, and the step's end raises (training.resume.CheckpointOnStop).
_stop_request: int | None = None
_steps_running = False


def handle_stop_signals() -> None:
    """Ctrl-C and SIGTERM raise ``Stopped`` (now, or at the end of a running training step);
    from the main thread of a process that runs lepton-exp (the CLI)."""
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_stop_signal)


def _on_stop_signal(signum: int, frame: object) -> None:
    from lepton_exp.errors import Stopped

    global _stop_request
    again = _stop_request is not None
    _stop_request = signum
    if not _steps_running or again:  # a second Ctrl-C does not wait for the step
        raise Stopped(signum, mid_step=_steps_running)


def stop_requested() -> int | None:
    """The signal that asked this process to stop, if one did."""
    return _stop_request


def defer_stops(deferred: bool) -> None:
    """While True, a stop signal is only noted (the caller raises at a safe point)."""
    global _steps_running
    _steps_running = deferred


# Cores shared with others: this job's sibling processes, and anything else on the machine.
def local_processes() -> int:
    """Ranks on this node that share its cores, when they were started by torchrun (which
    sets ``LOCAL_WORLD_SIZE``); SLURM tasks get cores of their own from SLURM's CPU binding,
    which :func:`cores` already sees."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def machine_cores() -> int:
    """Every core of the machine: what the load average is a load on."""
    return os.cpu_count() or 1


def load_average() -> float | None:
    """The machine's 1-minute load average (tasks running or waiting for a core, averaged
    over about a minute); None where the system keeps none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def cpu_ticks() -> tuple[int, int] | None:
    """(CPU time every process on the machine has used, CPU time this process has used), in
    clock ticks since boot (Linux ``/proc/stat`` and ``/proc/self/stat``: the same tick
    accounting, so their difference over an interval is what other processes, and the
    hypervisor's other guests -- "steal" -- took of the cores); None where not Linux."""
    try:
        with open("/proc/stat") as machine:
            # cpu  user nice system idle iowait irq softirq steal guest guest_nice
            fields = [int(value) for value in machine.readline().split()[1:9]]
        with open("/proc/self/stat") as own:
            # after the command name in parentheses: state is field 3, utime and stime 14, 15
            utime, stime = own.read().rsplit(")", 1)[1].split()[11:13]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq + steal, int(utime) + int(stime)


def ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# Where the window of :func:`others_recent_cores` starts: this module's import (early in a
# run's process, before torch and Lightning load), then the previous measurement; and that
# measurement, for a call that comes too soon after it.
_window_start: tuple[float, tuple[int, int] | None] = (time.monotonic(), cpu_ticks())
_last_measured: float | None = None


def others_recent_cores(min_seconds: float = 1.0) -> float | None:
    """Cores other processes kept busy on average since the previous measurement (the first:
    since this process began importing lepton_exp), from the kernel's CPU accounting; None
    where there is none. A call within ``min_seconds`` of the previous measurement (the
    accounting's 10 ms ticks make a short window noisy) returns that measurement. Unlike the
    load average, which lags by a minute, this sees only what ran while this process was
    starting or running: not the run before it."""
    global _window_start, _last_measured
    started, ticks_before = _window_start
    now = time.monotonic()
    if now - started < min_seconds:
        return _last_measured
    ticks = cpu_ticks()
    _window_start = (now, ticks)
    seconds = others_cpu_seconds(ticks_before, ticks)
    if seconds is None:
        return None
    _last_measured = seconds / (now - started)
    return _last_measured


def others_cpu_seconds(before: tuple[int, int] | None, after: tuple[int, int] | None
                       ) -> float | None:
    """CPU seconds everything but this process used between two :func:`cpu_ticks`."""
    if before is None or after is None:
        return None
    machine, own = after[0] - before[0], after[1] - before[1]
    return max(0, machine - own) / ticks_per_second()
