"""Multi-process training: DDP over 2 CPU processes (gloo) computes what one process computes,
inside a Hydra sweep, with one writer; thread shares for parallel jobs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.test_cli import cli

# bert_tiny (LayerNorm only, dropout off) makes one process with batch 16 and two ranks with
# batch 8 compute the same gradients: the tolerance only absorbs float summation order.
# (BatchNorm models differ by per-rank batch statistics unless trainer.sync_batchnorm, GPUs.)
COMMON = [
    "data=synthetic_text", "data.train_subset=320", "model=bert_tiny",
    "+model.kwargs.hidden_dropout_prob=0", "+model.kwargs.attention_probs_dropout_prob=0",
    "teacher.model.name=bert_tiny", "+teacher.model.kwargs.hidden_dropout_prob=0",
    "+teacher.model.kwargs.attention_probs_dropout_prob=0", "optim=adamw", "optim.lr=0.001",
    "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false", "logger=csv",
]
ONE_PROCESS = ["data.batch_size=16"]
TWO_RANKS = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
             "data.batch_size=8", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
             "trainer.enable_model_summary=false"]
TOLERANCE = 1e-4  # relative, on every loss; accuracies, F1 and MCC must be equal


def _records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("summary.json"))
            if "cache" not in p.parts]


def _assert_same_metrics(one: dict, two: dict) -> None:
    assert one["status"] == two["status"] == "completed", (one.get("error"), two.get("error"))
    assert set(one["metrics"]) == set(two["metrics"])
    for key, value in one["metrics"].items():
        other = two["metrics"][key]
        if "latency" in key or "speedup" in key:  # timings: measured, not computed
            continue
        if "loss" in key:
            assert other == pytest.approx(value, rel=TOLERANCE), key
        else:
            assert other == value, key


# (the prune case: ~75 s of real processes, in make test-all)
@pytest.mark.parametrize("method", [["distill=kd"], pytest.param(
    ["prune=magnitude", "prune.sparsity=0.5", "prune.finetune_epochs=1"],
    marks=pytest.mark.slow)], ids=["distill", "prune"])
def test_two_gloo_ranks_match_one_process_inside_a_sweep(tmp_path, method):
    single = cli(*COMMON, *ONE_PROCESS, *method, "hydra.run.dir=" + str(tmp_path / "one"),
                 cwd=tmp_path, env={"LEPTON_OUTPUT_DIR": str(tmp_path / "one_out")})
    assert single.returncode == 0, single.stderr[-3000:]
    # The DDP run is a one-job Hydra multirun: its ranks must not start the sweep again
    # or leave run directories of their own (lightning-hydra-template #393).
    out = tmp_path / "two_out"
    ddp = cli("-m", *COMMON, *TWO_RANKS, *method, "seed=0", cwd=tmp_path,
              env={"LEPTON_OUTPUT_DIR": str(out)})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # each rank knows its rank from its start: one of them writes the files and the report
    # (of each run: the teacher's, trained for the cache, and the distillation's)
    reports = [line for line in (ddp.stdout + ddp.stderr).splitlines()
               if line.startswith("run record:")]
    assert len(reports) == len(set(reports)) == 2, reports
    assert not (out / "runs").exists()
    sweep_dirs = list((out / "multiruns").iterdir())
    assert len(sweep_dirs) == 1
    job_dirs = [p for p in sweep_dirs[0].iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(job_dirs) == 1, job_dirs
    (one,), (two,) = _records(tmp_path / "one"), _records(job_dirs[0])
    _assert_same_metrics(one, two)
    # two ranks share the cores
    assert two["torch_threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
    # One writer: one CSV log, one export, one record; the teacher/dense model once in the
    # cache, trained by two ranks as well (it matches the single-process one too).
    assert len(list(job_dirs[0].rglob("metrics.csv"))) == 1
    entries = [p for p in (out / "cache" / "teachers").iterdir()
               if p.is_dir() and p.name != "runs"]
    assert len(entries) == 1
    one_teacher = one.get("teachers") or [one["prune"]["dense"]]
    two_teacher = two.get("teachers") or [two["prune"]["dense"]]
    assert one_teacher[0]["metrics"]["test/loss"] == pytest.approx(
        two_teacher[0]["metrics"]["test/loss"], rel=TOLERANCE)


def test_ddp_failure_is_one_line_and_leaves_a_record(tmp_path):
    # SyncBatchNorm needs GPUs: the ranks fail, the job reports it in one line.
    done = cli(*TWO_RANKS, "data=synthetic", "distill=none", "trainer.sync_batchnorm=true",
               "logger=none", "hydra.run.dir=" + str(tmp_path / "run"), cwd=tmp_path,
               env={"LEPTON_OUTPUT_DIR": str(tmp_path / "out")})
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("lepton-exp: error")]
    assert len(lines) == 1 and "SyncBatchNorm" in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    record = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert record["status"] == "failed" and "SyncBatchNorm" in record["error"]


def test_thread_share_per_process():
    from lepton_exp.training import parallel

    cores = parallel.cores()
    assert parallel.threads_per_process(1) is None
    assert parallel.threads_per_process(cores) == 1
    assert parallel.threads_per_process(4 * cores) == 1
    if cores >= 4:
        assert parallel.threads_per_process(2) == cores // 2


def test_process_count_and_launch_decision(compose_cfg, monkeypatch):
    from lepton_exp.errors import ConfigError
    from lepton_exp.training import parallel

    for key in ("SLURM_NTASKS", "TORCHELASTIC_RUN_ID", parallel.WORKER_ENV):
        monkeypatch.delenv(key, raising=False)
    assert not parallel.needs_launch(compose_cfg("trainer=cpu"))
    assert parallel.needs_launch(compose_cfg("trainer=ddp", "trainer.devices=2"))
    assert not parallel.needs_launch(compose_cfg("trainer=ddp", "trainer.devices=1"))
    monkeypatch.setenv("SLURM_NTASKS", "4")  # ranks started by SLURM: run, don't launch
    assert not parallel.needs_launch(compose_cfg("trainer=ddp", "trainer.devices=2"))
    monkeypatch.delenv("SLURM_NTASKS")
    with pytest.raises(ConfigError, match="hydra/launcher=slurm"):
        parallel.needs_launch(compose_cfg("trainer=ddp", "trainer.num_nodes=2"))
    with pytest.raises(ConfigError, match="trainer.devices"):
        parallel.needs_launch(compose_cfg("trainer=ddp", "trainer.devices=auto"))
