"""Stopping and continuing a run: the resumed run ends where the uninterrupted one does.

In-process tests stop a fit at a chosen step with Ctrl-C (KeyboardInterrupt, which Lightning
turns into a graceful stop: the checkpoint is written, then SystemExit); the subprocess
tests kill or terminate the real command line.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import torch

from lepton_exp.app.runner import run_stage
from lepton_exp.errors import Stopped
from lepton_exp.training.classify import ClassificationModule
from lepton_exp.training.resume import batches_done_in_epoch

FAST = ["data=synthetic", "data.num_samples=600", "trainer.max_epochs=3",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=none",
        "model.drop_rate=0.3"]  # dropout: the global RNG matters


def _stop_at(monkeypatch, step: int, stage_module: type = ClassificationModule) -> None:
    """Press Ctrl-C in the training step that would make optimiser step ``step``."""
    original = stage_module.training_step

    def training_step(self, batch, batch_idx):
        if self.global_step == step:
            monkeypatch.setattr(stage_module, "training_step", original)  # once
            raise KeyboardInterrupt
        return original(self, batch, batch_idx)

    monkeypatch.setattr(stage_module, "training_step", training_step)


def _interrupted_then_resumed(compose_cfg, tmp_path, monkeypatch, step, *overrides,
                              module=ClassificationModule, checkpoint=True, base=FAST):
    cfg = compose_cfg(*base, f"paths.cache_dir={tmp_path / 'cache'}", *overrides)
    reference = run_stage(cfg.copy(), run_dir=tmp_path / "reference")
    _stop_at(monkeypatch, step, module)
    with pytest.raises(Stopped):  # Ctrl-C: Lightning stops, the trainer raises Stopped
        run_stage(cfg.copy(), run_dir=tmp_path / "resumed")
    stopped = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    if checkpoint:
        checkpoint = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt",
                                weights_only=True)
    resumed = run_stage(cfg.copy(), run_dir=tmp_path / "resumed")
    return reference, stopped, checkpoint, resumed


@pytest.mark.parametrize("step", [20, 13])  # 13 batches an epoch: mid-epoch 1, its start
def test_a_run_stopped_mid_epoch_resumes_to_identical_metrics(compose_cfg, tmp_path,
                                                               monkeypatch, step):
    reference, stopped, checkpoint, resumed = _interrupted_then_resumed(
        compose_cfg, tmp_path, monkeypatch, step)
    assert stopped["status"] == "interrupted"
    assert checkpoint["global_step"] == step  # saved after the last finished step
    per_epoch = reference["metrics"]["global_step"] // reference["metrics"]["epochs"]
    assert batches_done_in_epoch(checkpoint) == step % per_epoch
    assert resumed["status"] == "completed" and resumed["resumed_from"].endswith("last.ckpt")
    assert resumed["metrics"] == reference["metrics"]  # train/* of the stopped epoch included


def test_distillation_with_schedules_resumes_to_identical_metrics(compose_cfg, tmp_path,
                                                                   monkeypatch):
    from lepton_exp.training.distill import DistillationModule

    reference, _, checkpoint, resumed = _interrupted_then_resumed(
        compose_cfg, tmp_path, monkeypatch, 33, "distill=kd", "distill.schedule.name=linear",
        "distill.schedule.temperature_final=1", "distill.warmup_epochs=1",
        # (the teacher-output cache refills after a resume from other batches: its logits
        # then differ in the last float bits, README: Reliability)
        "distill.cache_teacher_outputs=false", module=DistillationModule)
    assert batches_done_in_epoch(checkpoint) == 7
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["metrics"]["train/temperature"] < 4.0  # the schedule moved



def _measured_elsewhere(metrics: dict) -> dict:
    """Metrics without wall-clock measurements (latency and speed-ups differ run to run)."""
    return {key: value for key, value in metrics.items()
            if "latency" not in key and "speedup" not in key}


@pytest.mark.parametrize("step, overrides", [
    (5, ["prune=magnitude", "prune.rounds=3"]),  # inside round 1 (1 epoch = 13 steps)
    (20, ["prune=magnitude", "prune.rounds=2", "prune.scope=global"]),  # round 2 of 2
    (5, ["prune=random", "prune.rounds=2"]),  # after round 1: random masks need its RNG
    (20, ["prune=channel", "prune.rounds=2", "prune.sparsity=0.3"]),  # shapes of round 1
    (17, ["prune=gradual", "prune.frequency=2", "prune.end=0.8"]),  # masks made mid-fit
])
def test_multi_round_and_gradual_pruning_resume_to_identical_metrics(
        compose_cfg, tmp_path, monkeypatch, step, overrides):
    from lepton_exp.training.distill import DistillationModule

    reference, stopped, _, resumed = _interrupted_then_resumed(
        compose_cfg, tmp_path, monkeypatch, step, *overrides, "distill=kd",
        "distill.cache_teacher_outputs=false", module=DistillationModule, checkpoint=False)
    assert stopped["status"] == "interrupted"
    assert resumed["status"] == "completed" and resumed["resumed_from"]
    assert _measured_elsewhere(resumed["metrics"]) == _measured_elsewhere(reference["metrics"])
    assert resumed["compression"]["pruned"]["layer_sparsity"] == \
        reference["compression"]["pruned"]["layer_sparsity"]


@pytest.mark.slow  # ~90 s here: three QAT runs (the default suite's budget is ~15 min)
def test_a_run_stopped_during_quantization_aware_training_resumes_it(compose_cfg, tmp_path,
                                                                      monkeypatch):
    """Stopped inside QAT (after the stage's own training): the same command finishes the
    QAT from its checkpoint, to the int8 model the uninterrupted run made."""
    from lepton_exp.training.distill import DistillationModule

    reference, stopped, _, resumed = _interrupted_then_resumed(
        compose_cfg, tmp_path, monkeypatch, 16, "quant=qat", module=DistillationModule,
        checkpoint=False)
    assert stopped["status"] == "interrupted"
    assert (tmp_path / "resumed" / "qat" / "checkpoints" / "last.ckpt").is_file()
    measured = _measured_elsewhere(resumed["metrics"])
    expected = _measured_elsewhere(reference["metrics"])
    # The stage's training had ended: its train/* come from checkpoints/fit_metrics.json
    assert measured == expected
    assert resumed["metrics"]["test_int8/acc"] == reference["metrics"]["test_int8/acc"]

@pytest.mark.slow  # real processes, ~105 s: make test-all
def test_killed_and_terminated_commands_continue_with_the_same_command(tmp_path):
    """The real command line: SIGKILL a single run, SIGTERM a sweep job; the same command
    continues each (the single run in its own timestamped directory, the same W&B run)."""
    from test_cli import EXE, cli, own_environment

    env = own_environment(LEPTON_OUTPUT_DIR=str(tmp_path / "out"))
    args = [*FAST[:2], "trainer.max_epochs=4", *FAST[3:-2], "logger=wandb",
            "checkpoint_every_minutes=0.001"]
    reference = cli(*args, "logger=csv", cwd=tmp_path, env={"LEPTON_OUTPUT_DIR": str(
        tmp_path / "reference")})
    assert reference.returncode == 0, reference.stderr
    expected = json.loads(next((tmp_path / "reference").glob("runs/*/*/summary.json")
                               ).read_text())["metrics"]

    for mode in ("single", "sweep"):
        command = [EXE, *(["-m"] if mode == "sweep" else []), *args]
        job = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
        pattern = "runs/*/*/checkpoints/last.ckpt" if mode == "single" else \
            "multiruns/*/*/checkpoints/last.ckpt"
        deadline = time.time() + 120
        while time.time() < deadline and job.poll() is None:
            found = list((tmp_path / "out").glob(pattern))
            if found and batches_done_in_epoch(torch.load(found[0], weights_only=True)):
                break
            time.sleep(0.05)
        assert job.poll() is None, "the run ended before a mid-epoch checkpoint"
        job.send_signal(signal.SIGKILL if mode == "single" else signal.SIGTERM)
        _, stderr = job.communicate(timeout=60)
        run_dir = found[0].parent.parent
        stopped = json.loads((run_dir / "summary.json").read_text())
        if mode == "sweep":  # the checkpoint of the moment it stopped, and a clean exit
            assert job.returncode == 128 + signal.SIGTERM
            assert stopped["status"] == "interrupted"
            assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr
        else:
            assert stopped["status"] == "running"
        again = cli(*(["-m"] if mode == "sweep" else []), *args, cwd=tmp_path, env=env)
        assert again.returncode == 0, again.stderr
        record = json.loads((run_dir / "summary.json").read_text())
        assert record["status"] == "completed", mode
        assert record["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
        assert record["wandb"]["id"] == stopped["wandb"]["id"]  # the same W&B run continues
        assert record["metrics"] == expected, mode
    assert len(list((tmp_path / "out").glob("runs/*/*/summary.json"))) == 1


def test_seeded_augmentation_and_the_skip_of_a_resumed_epoch():
    """A sample's random crop/flip depends on (seed, epoch, index) only, not on the global
    RNG; a resumed epoch yields the tail of the same permutation."""
    from torch.utils.data import DistributedSampler
    from torchvision.transforms import v2

    from lepton_exp.data.base import ResumableSampler, Split
    from lepton_exp.data.image import ImageDataset

    images = torch.arange(20 * 3 * 8 * 8, dtype=torch.uint8).reshape(20, 3, 8, 8)
    dataset = ImageDataset(Split(images, torch.arange(20)),
                           v2.Compose([v2.RandomCrop(8, padding=2), v2.RandomHorizontalFlip()]),
                           random_transform=True)

    def sampler():
        made = ResumableSampler(DistributedSampler(dataset, 1, 0, seed=7), seeded=True)
        made.set_epoch(3)
        return made

    full = list(sampler())
    resumed = sampler()
    resumed.skip = 5
    assert list(resumed) == full[5:]
    torch.manual_seed(0)
    first = [dataset[key][0] for key in full]
    torch.manual_seed(1)  # another global RNG state: the same images
    assert all(torch.equal(a, dataset[key][0]) for a, key in zip(first, full, strict=True))
    assert len({tuple(a.flatten()[:40].tolist()) for a in first}) > 1
    unseeded = ResumableSampler(DistributedSampler(dataset, 1, 0, seed=7), seeded=False)
    unseeded.set_epoch(3)
    assert list(unseeded) == [index for index, _ in full]
