"""Threads on a shared machine: the ``threads`` key and its default share of the cores, and
latency that says when it was timed while other processes competed for the cores."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from lepton_exp.config.identity import computed_settings, to_container
from lepton_exp.config.preflight import PreflightError, preflight
from lepton_exp import measure, processes
from lepton_exp.measure import BUSY_OTHER_CORES, Timing, contention, latency_report
from lepton_exp.processes import cores, cpu_ticks, machine_cores, ticks_per_second
from lepton_exp.teachers.cache import cache_key, teacher_run_config
from lepton_exp.training import parallel

FAST = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "logger=none", "data.train_subset=64"]


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def hydra_cfg():
    """Compose conf/ with Hydra's own node (its launcher), as a Hydra job sees it."""
    from hydra.core.global_hydra import GlobalHydra

    from lepton_exp.config.compose import compose_config

    def _compose(*overrides: str):
        GlobalHydra.instance().clear()
        return compose_config(list(overrides), hydra_node=True, explain=False)

    return _compose


def test_default_threads_are_this_process_share_of_the_cores(hydra_cfg, monkeypatch):
    from hydra.core.hydra_config import HydraConfig

    alone = parallel.torch_default_threads()  # torch's own: every core this process may use
    assert parallel.default_threads() == alone  # no Hydra launcher: one process
    for jobs, share in ((1, alone), (2, max(1, cores() // 2))):
        HydraConfig.instance().set_config(hydra_cfg("hydra/launcher=joblib",
                                                    f"hydra.launcher.n_jobs={jobs}"))
        try:
            assert parallel.parallel_jobs() == jobs
            assert parallel.default_threads() == share, jobs
            assert parallel.configure_threads() == share == torch.get_num_threads()
            assert parallel.configure_threads(1) == 1 == torch.get_num_threads()  # key wins
        finally:
            HydraConfig.instance().cfg = None
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun ranks on this node
    assert parallel.default_threads() == max(1, cores() // 2)


@pytest.mark.parametrize("override,expected", [
    ("threads=0", "threads=0 is out of range: it must be in [1, inf)"),
    ("threads=abc", "'threads=abc'")])
def test_bad_threads_give_one_line(override, expected):
    with pytest.raises(PreflightError) as caught:
        preflight([override])
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_threads_do_not_change_the_run_identity_or_the_teacher_key(compose_cfg):
    base, one = compose_cfg(), compose_cfg("threads=1")
    assert one.threads == 1 and base.threads is None
    assert computed_settings(to_container(one)) == computed_settings(to_container(base))
    assert (cache_key(teacher_run_config(one, one.teacher))
            == cache_key(teacher_run_config(base, base.teacher)))


def test_a_run_with_threads_1_runs_and_records_one_thread(compose_cfg, tmp_path):
    from lepton_exp.app.runner import run_stage

    cfg = compose_cfg(*FAST, "threads=1", "prune=magnitude", "prune.latency_batch=4",
                      f"paths.cache_dir={tmp_path / 'cache'}")
    record = run_stage(cfg, run_dir=tmp_path / "run")
    assert record["status"] == "completed" and record["torch_threads"] == 1
    # its latencies keep their spread and how busy the machine was
    assert isinstance(record["metrics"]["compress/latency_busy"], bool)
    timing = record["compression"]["pruned"]["latency"]
    assert timing["threads"] == 1 and timing["b1"]["repeats"] == 20
    assert timing["b1"]["min"] <= record["metrics"]["compress/latency_ms_b1"] <= timing["b1"]["max"]


def test_the_busy_criterion(monkeypatch):
    monkeypatch.setattr(measure, "machine_cores", lambda: 4)

    def timing(other_cpu_s, threads=2, wall_s=1.0, load=0.0):
        return Timing([[1.0]], warmup=1, threads=threads, load_before=load, load_after=load,
                      other_cpu_s=other_cpu_s, wall_s=wall_s)

    # 2 threads on 4 cores leave 2 free: others may use them, and a quarter core more
    assert not contention([timing(2.2)])["busy"]
    busy = contention([timing(3.0, wall_s=1.0), timing(2.0, wall_s=1.0)])  # 2.5 cores on average
    assert busy["busy"] and busy["other_cores"] == pytest.approx(2.5)
    assert contention([timing(0.3, threads=4)])["busy"]  # every core taken by this process
    assert not contention([timing(0.2, threads=4)])["busy"]
    # a short timing: 2 ticks of another process in 50 ms read as 0.4 cores, but are
    # within the kernel's tick accounting; 5 ticks (and more cores than free) are busy
    tick = 1 / ticks_per_second()
    assert not contention([timing(2 * tick, threads=4, wall_s=0.05)])["busy"]
    assert contention([timing(5 * tick, threads=4, wall_s=0.05)])["busy"]
    # no CPU accounting (not Linux): the load average against the machine's cores
    assert contention([timing(None, load=4 + 1)])["busy"]
    assert not contention([timing(None, load=0.0)])["busy"]


def test_a_run_warns_once_when_other_processes_keep_the_cores_busy(monkeypatch, caplog):
    monkeypatch.setattr(parallel, "machine_cores", lambda: 2)
    # measured: the cores others kept busy while this process started
    monkeypatch.setattr(parallel, "others_recent_cores", lambda: 2.0)
    with caplog.at_level(logging.WARNING, logger=parallel.__name__):
        assert parallel.warn_if_machine_busy(threads=2, processes=1)
    assert len(caplog.records) == 1 and "threads=1" in caplog.text
    monkeypatch.setattr(parallel, "others_recent_cores", lambda: 0.3)
    assert not parallel.warn_if_machine_busy(threads=2, processes=1)
    # a sweep's own parallel jobs are not "other processes"
    monkeypatch.setattr(parallel, "others_recent_cores", lambda: 1.0)
    assert not parallel.warn_if_machine_busy(threads=1, processes=2)
    monkeypatch.setattr(parallel, "others_recent_cores", lambda: 2.0)  # and one more process
    assert parallel.warn_if_machine_busy(threads=1, processes=2)

    # without CPU accounting: the load average, less this process and its siblings
    monkeypatch.setattr(parallel, "others_recent_cores", lambda: None)
    monkeypatch.setattr(parallel, "own_recent_load", lambda threads: 0.1)  # a fresh process
    monkeypatch.setattr(parallel, "load_average", lambda: 3.0)  # 2+ other busy processes
    assert parallel.warn_if_machine_busy(threads=2, processes=1)
    monkeypatch.setattr(parallel, "load_average", lambda: 0.2)
    assert not parallel.warn_if_machine_busy(threads=2, processes=1)
    monkeypatch.setattr(parallel, "own_recent_load", lambda threads: threads)
    monkeypatch.setattr(parallel, "load_average", lambda: 2.0)
    assert not parallel.warn_if_machine_busy(threads=1, processes=2)
    monkeypatch.setattr(parallel, "load_average", lambda: 3.0)
    assert parallel.warn_if_machine_busy(threads=1, processes=2)


@pytest.mark.skipif(cpu_ticks() is None, reason="the kernel keeps no CPU accounting")
def test_the_start_check_sees_processes_running_now_not_the_lagging_load_average():
    processes.others_recent_cores(min_seconds=0)  # a window from now
    with competing_processes(machine_cores()):
        time.sleep(1.5)
        busy = processes.others_recent_cores()
    assert busy is not None and busy > machine_cores() - 0.5 - 0.25
    # right after: the load average still counts them, the window from the last call
    # holds only what ran since (nothing of this test's)
    # a call right after gets the same measurement (too short a window to measure anew)
    assert processes.others_recent_cores() == busy
    time.sleep(1.1)
    quiet = processes.others_recent_cores()
    assert quiet is not None and quiet < busy - 0.5


@contextlib.contextmanager
def competing_processes(count: int):
    """``count`` processes spinning on the CPU, all of them running when this enters."""
    spinners = [subprocess.Popen([sys.executable, "-c", "print(flush=True)\nwhile True: pass"],
                                 stdout=subprocess.PIPE) for _ in range(count)]
    try:
        for spinner in spinners:
            spinner.stdout.readline()  # it is past its start-up, spinning
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
            spinner.stdout.close()


@pytest.mark.skipif(cpu_ticks() is None, reason="the kernel keeps no CPU accounting")
def test_a_latency_timed_under_competing_processes_is_flagged_busy():
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    example = torch.randn(1, 512)

    def timed():
        (report,) = latency_report([model], example, latency_batch=8)
        return report

    # Other tests may load this machine too: the quiet timings cannot be promised idle, so
    # the competing one must have waited more than the less disturbed of the two around it.
    before = timed()
    with competing_processes(2 * cores()):  # this process gets at most a third of a core
        busy = timed()
    after = timed()
    assert busy["latency_busy"] is True
    assert busy["latency"]["other_cores"] > machine_cores() - 1 + BUSY_OTHER_CORES
    quiet = min(before["latency"]["other_cores"], after["latency"]["other_cores"])
    assert busy["latency"]["other_cores"] > quiet
    for report in (before, busy, after):
        spread = report["latency"]["b1"]
        assert spread["min"] <= report["latency_ms_b1"] == spread["median"] <= spread["max"]
        assert report["latency"]["load_before"] is not None
        bar = max(0, machine_cores() - 1) + BUSY_OTHER_CORES
        if report["latency"]["other_cores"] <= bar:
            assert report["latency_busy"] is False
