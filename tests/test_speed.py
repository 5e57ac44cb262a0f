"""The GPU throughput path's decisions (precision, fused optimisers, channels_last, compile,
loader workers), checked on this CPU machine with CUDA's answers stubbed where needed."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import nn

from lepton_exp.config.schemas import OptimConfig
from lepton_exp.data.base import loader_workers
from lepton_exp.training import speed
from lepton_exp.training.optim import build_optimizer


@pytest.mark.parametrize("cuda, bf16, accelerator, expected", [
    (False, False, "cpu", "32-true"),
    (False, False, "auto", "32-true"),
    (True, True, "gpu", "bf16-mixed"),
    (True, False, "gpu", "16-mixed"),  # fp16 autocast + Lightning's gradient scaler
    (True, True, "cpu", "32-true"),  # a CPU run on a GPU machine
])
def test_precision_auto_picks_bf16_where_the_gpu_has_it(monkeypatch, cuda, bf16, accelerator,
                                                         expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    assert speed.resolve_precision("auto", accelerator) == expected
    assert speed.resolve_precision("16-mixed", accelerator) == "16-mixed"  # as given


def test_fused_optimizers_on_cuda_parameters_or_when_asked():
    cpu = [nn.Parameter(torch.zeros(2))]
    assert not speed.fused_optimizer(None, cpu)
    assert speed.fused_optimizer(True, cpu) and not speed.fused_optimizer(False, cpu)
    meta = [nn.Parameter(torch.zeros(2, device="meta"))]
    assert not speed.fused_optimizer(None, meta)
    for name in ("sgd", "adamw"):
        cfg = OmegaConf.structured(OptimConfig(name=name, fused=True))
        optimizer = build_optimizer([nn.Parameter(torch.zeros(2))], cfg)
        assert optimizer.defaults["fused"] is True
        cfg.fused = None
        assert not build_optimizer([nn.Parameter(torch.zeros(2))], cfg).defaults.get("fused")


def test_channels_last_and_compile_leave_a_cpu_module_as_it_is():
    class Module(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())

        @property
        def device(self):
            return torch.device("cpu")

    module = Module()
    settings = speed.ThroughputSettings(channels_last=True, compile_models=False)
    settings.on_fit_start(None, module)
    assert settings.applied == []
    assert module.model[0].weight.is_contiguous()  # NCHW, untouched on CPU


def test_loader_workers_auto_skips_processes_for_batches_cut_from_memory():
    assert loader_workers("auto", makes_batches=True) == 0
    assert loader_workers("auto") >= 1
    assert loader_workers(3, makes_batches=True) == 3


@pytest.mark.slow  # inductor compiles the models (C++ on CPU): a minute or two
def test_compiled_training_runs_and_keeps_plain_state_dicts(compose_cfg, tmp_path):
    from lepton_exp.app.runner import run_stage

    cfg = compose_cfg("distill=kd", "data=synthetic", "data.num_samples=128",
                      "trainer.max_epochs=1", "trainer.compile=true", "logger=none",
                      "trainer.enable_progress_bar=false", "model=resnet8",
                      f"paths.cache_dir={tmp_path / 'cache'}")
    record = run_stage(cfg, run_dir=tmp_path / "run")
    assert record["status"] == "completed" and record["metrics"]["test/acc"] >= 0
    checkpoint = torch.load(record["checkpoints"]["last"], weights_only=True)
    assert not any("_orig_mod" in key for key in checkpoint["state_dict"])


def test_imports_leave_the_collector_on_and_their_objects_frozen():
    import gc

    from lepton_exp.processes import collector_paused_while_importing

    frozen_before = gc.get_freeze_count()
    try:
        with collector_paused_while_importing():
            assert not gc.isenabled()
            loaded = [[index] for index in range(1000)]  # stands in for modules' objects
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen_before + len(loaded)
    finally:
        gc.unfreeze()


def test_progress_bar_stops_without_waiting_for_its_drawing_thread(tmp_path):
    """Lightning's rich bar is stopped at every epoch start: the stop must not join the
    drawing thread (which sleeps half a second between wake-ups), only signal it."""
    from lepton_exp.training.progress import ProgressBar

    bar = ProgressBar(leave=True)
    bar._init_progress(trainer=object())  # (the metrics column only keeps the trainer)
    thread = bar.progress.live._refresh_thread
    assert thread is not None and thread.is_alive()
    bar._stop_progress()
    assert bar._progress_stopped and thread.done.is_set()
    assert thread.is_alive()  # not joined: it ends at its next wake-up
    thread.join(timeout=5)
    assert not thread.is_alive()


@pytest.mark.parametrize("setting", [None, True])
def test_deterministic_runs_skip_the_nan_fill_of_new_tensors_unless_asked(compose_cfg,
                                                                           tmp_path, setting):
    from lepton_exp.training.trainer import build_trainer

    overrides = [] if setting is None else [f"trainer.fill_uninitialized_memory={setting}"]
    cfg = compose_cfg("stage=teacher", "logger=none", *overrides)
    build_trainer(cfg, tmp_path, [])
    try:
        assert torch.are_deterministic_algorithms_enabled()  # trainer.deterministic=true
        assert torch.utils.deterministic.fill_uninitialized_memory is bool(setting)
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = True  # PyTorch's default
        torch.use_deterministic_algorithms(False)


def test_the_nan_fill_changes_no_result(compose_cfg, tmp_path):
    """Off, a deterministic run computes exactly what it computes with the fill on: no
    kernel on the path reads memory it did not write."""
    from lepton_exp.app.runner import run_stage

    def metrics(fill: bool) -> dict:
        cfg = compose_cfg("distill=kd", "data=synthetic", "data.num_samples=256",
                          "trainer.max_epochs=2", "logger=none", "model=resnet8",
                          "trainer.enable_progress_bar=false", "teacher.model.name=resnet14",
                          f"trainer.fill_uninitialized_memory={fill}",
                          f"paths.cache_dir={tmp_path / 'cache'}")
        record = run_stage(cfg, run_dir=tmp_path / f"fill-{fill}")
        return {key: value for key, value in record["metrics"].items()
                if key.startswith(("test", "val", "train"))}

    try:
        with_fill, without = metrics(True), metrics(False)
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = True
    assert with_fill and with_fill == without


def test_the_trainer_profiles_nothing_and_its_checkpoints_keep_lightnings_state_keys(
        compose_cfg, tmp_path):
    """The cheaper no-op profiler and the kept checkpoint keys change nothing a checkpoint
    holds: the keys are Lightning's own (a resumed run finds its callbacks' states)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lepton_exp.training.trainer import build_trainer

    cfg = compose_cfg("stage=teacher", "logger=none")
    trainer, checkpoints = build_trainer(cfg, tmp_path, [])
    assert isinstance(trainer.profiler, speed.NoProfiler)
    with trainer.profiler.profile("a hook"):
        pass
    best, last = checkpoints.best, checkpoints.last

    def built(callback) -> str:  # the key as Lightning builds it, every time
        return ModelCheckpoint.state_key.fget(callback)

    assert best.state_key == built(best) and best.state_key.startswith("_BestCheckpoint{")
    best.monitor = "val/pearson"  # set in setup from the module's metric
    assert best.state_key == built(best) and "val/pearson" in best.state_key
    # the last checkpoint keeps the key of a plain ModelCheckpoint (earlier runs' checkpoints)
    plain = ModelCheckpoint(dirpath=str(tmp_path), monitor=None, save_on_train_epoch_end=True)
    assert last.state_key == plain.state_key


class _CountsBackwards(pl.Callback):
    def __init__(self) -> None:
        self.calls = 0

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.calls += 1


def test_callbacks_get_only_the_batch_hooks_they_implement(compose_cfg, tmp_path):
    """A run's callbacks are called at each batch only for the hooks their classes
    implement; Lightning skips the rest (None), and still calls the implemented ones."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lepton_exp.training.timing import TrainTimer
    from lepton_exp.training.trainer import _Checkpoint, build_trainer

    counter = _CountsBackwards()
    trainer, checkpoints = build_trainer(compose_cfg("stage=teacher", "logger=none"),
                                         tmp_path, [], callbacks=[counter])
    for callback in trainer.callbacks:
        for hook in speed.BATCH_HOOKS:
            implemented = getattr(type(callback), hook) is not getattr(pl.Callback, hook)
            # (these checkpoints save at epoch ends only: nothing to do at a batch's end)
            idle_at_batches = isinstance(callback, ModelCheckpoint) and hook == \
                "on_train_batch_end"
            assert callable(getattr(callback, hook)) == (implemented and not idle_at_batches), \
                (callback, hook)
    assert callable(next(c for c in trainer.callbacks
                         if isinstance(c, TrainTimer)).on_train_batch_start)
    assert counter.on_train_batch_start is None and callable(counter.on_before_backward)
    # with a logger, the learning-rate monitor logs at epoch starts: no batch hook either
    from pytorch_lightning.callbacks import LearningRateMonitor
    from pytorch_lightning.loggers import CSVLogger

    logged, _ = build_trainer(compose_cfg("stage=teacher", "logger=none"), tmp_path / "logged",
                              [CSVLogger(tmp_path / "logged")])
    monitor = next(c for c in logged.callbacks if isinstance(c, LearningRateMonitor))
    assert monitor.logging_interval == "epoch" and monitor.on_train_batch_start is None
    # a checkpoint that saves every n steps keeps its batch-end hook
    assert callable(_Checkpoint(dirpath=str(tmp_path), every_n_train_steps=2).on_train_batch_end)

    # Lightning's dispatch skips the None hooks and calls the implemented one at each step
    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    counter = _CountsBackwards()
    # a hook given to the instance (LambdaCallback sets its hooks so) is kept and called
    lambda_steps: list[int] = []
    given = pl.callbacks.LambdaCallback(
        on_train_batch_end=lambda trainer, module, outputs, batch, index:
        lambda_steps.append(index))
    quiet = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False,
                       enable_progress_bar=False, enable_model_summary=False,
                       callbacks=[counter, pl.Callback(), given])
    speed.skip_inherited_batch_hooks(quiet.callbacks)
    assert given.on_train_batch_start is None
    data = torch.utils.data.TensorDataset(torch.randn(12, 4))
    quiet.fit(Tiny(), train_dataloaders=torch.utils.data.DataLoader(data, batch_size=4))
    assert counter.calls == 3 and lambda_steps == [0, 1, 2]


class _Steps(pl.LightningModule):
    """Records what each training step is given."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)
        self.given: list = []

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _WithIndex(_Steps):
    def training_step(self, batch, batch_idx):
        self.given.append(batch_idx)
        return self.layer(batch[0]).sum()


class _WithoutIndex(_Steps):
    def training_step(self, batch):
        self.given.append(len(batch[0]))
        return self.layer(batch[0]).sum()


@pytest.mark.parametrize("module_class, given", [(_WithIndex, [0, 1, 2, 0, 1, 2]),
                                                 (_WithoutIndex, [4] * 6)])
def test_the_training_loop_reads_the_steps_signature_once(monkeypatch, module_class, given):
    """lepton-exp's Trainer passes ``batch_idx`` to a training_step that takes it, as
    Lightning does, and inspects the step's signature once, not at every step."""
    from lepton_exp.training.trainer import Trainer

    inspected = []
    real = speed.is_param_in_hook_signature
    monkeypatch.setattr(speed, "is_param_in_hook_signature",
                        lambda *args, **kwargs: inspected.append(args) or real(*args, **kwargs))
    trainer = Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    assert isinstance(trainer.fit_loop.epoch_loop, speed.TrainingEpochLoop)
    module = module_class()
    data = torch.utils.data.TensorDataset(torch.randn(12, 4))
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=4))
    assert module.given == given and len(inspected) == 1


@pytest.mark.parametrize("clip", [None, 0.5])
def test_gradients_are_clipped_exactly_when_the_trainer_says(compose_cfg, tmp_path,
                                                             monkeypatch, clip):
    """The module skips Lightning's clipping path without ``trainer.gradient_clip_val``, and
    clips at every step with it; a CPU batch reaches the step as the loader made it."""
    from pytorch_lightning.plugins.precision import Precision

    from lepton_exp.app.runner import run_stage
    from lepton_exp.data.base import ClassificationData

    asked: list = []  # Lightning's clipping path (the module's default hook calls it)
    clip_gradients = pl.LightningModule.clip_gradients

    def spy(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        asked.append(gradient_clip_val)
        clip_gradients(self, optimizer, gradient_clip_val, gradient_clip_algorithm)

    monkeypatch.setattr(pl.LightningModule, "clip_gradients", spy)
    clipped: list[float] = []
    monkeypatch.setattr(Precision, "clip_grad_by_norm",
                        lambda self, optimizer, value: clipped.append(value))
    batch = (torch.zeros(2, 3), torch.zeros(2))
    assert ClassificationData.transfer_batch_to_device(
        None, batch, torch.device("cpu"), 0) is batch
    cfg = compose_cfg("stage=teacher", "logger=none", "data=synthetic", "data.num_samples=64",
                      "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                      "model=resnet8", f"trainer.gradient_clip_val={clip or 'null'}",
                      f"paths.cache_dir={tmp_path / 'cache'}")
    record = run_stage(cfg, run_dir=tmp_path / "run")
    steps = record["metrics"]["global_step"]
    assert asked == clipped == ([clip] * steps if clip else [])


def test_the_batch_transfer_hooks_owner_is_chosen_once_a_fit(monkeypatch):
    """Lightning asks at every batch whether the data module or the module implements each
    batch-transfer hook; under ThroughputSettings it asks once a fit, and the data module's
    hook is still the one called at every batch."""
    from pytorch_lightning.trainer.connectors import data_connector

    asked: list[str] = []
    real = data_connector.is_overridden
    monkeypatch.setattr(data_connector, "is_overridden",
                        lambda name, *args, **kwargs: asked.append(name) or real(
                            name, *args, **kwargs))

    class Data(pl.LightningDataModule):
        def __init__(self) -> None:
            super().__init__()
            self.transfers = 0

        def train_dataloader(self):
            return torch.utils.data.DataLoader(
                torch.utils.data.TensorDataset(torch.randn(16, 4)), batch_size=4)

        def transfer_batch_to_device(self, batch, device, dataloader_idx):
            self.transfers += 1
            return batch

    data = Data()
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[speed.ThroughputSettings()])
    trainer.fit(_WithIndex(), datamodule=data)
    assert isinstance(trainer._data_connector._datahook_selector, speed.DataHookSelector)
    hooks = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")
    assert data.transfers == 8
    assert sorted(name for name in asked if name in hooks) == sorted(hooks * 2)  # 2 checks each
