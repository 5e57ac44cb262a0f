"""The GPU throughput path: what a run switches on where it applies, each switchable.

- ``trainer.precision=auto`` (trainer=gpu, trainer=ddp): bf16 autocast on GPUs that have it,
  fp16 autocast with a gradient scaler on older ones, float32 on CPU. The teachers run inside
  the same autocast, in its dtype.
- ``trainer.channels_last`` (default true): on CUDA, convolutional models (students and
  teachers) in the NHWC layout tensor cores read; the first convolution converts the input.
- ``optim.fused`` (default null: on CUDA): the fused CUDA kernels of SGD / Adam / AdamW.
- ``trainer.compile=true``: ``torch.compile`` of the student and the teachers, in place
  (``nn.Module.compile``: state dicts, checkpoints and hooks stay as they are).
- ``trainer.fill_uninitialized_memory`` (default false): PyTorch's deterministic mode (our
  ``trainer.deterministic``, on by default) also fills every new tensor with NaN unless told
  not to; PyTorch documents turning that off as safe for programs that never read memory
  they did not write, and it costs ~5 % of a CPU conv step (``fill_uninitialized_memory``).
- Loader workers (``data.num_workers=auto``) and pinned memory: ``lepton_exp.data.base``;
  in-memory images are transformed as batches on the device (``lepton_exp.data.image``).

Nothing here changes a CPU run's arithmetic: CPU runs stay bit-exact and resumable.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from typing import Any, Iterable, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.loops import _TrainingEpochLoop
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.trainer.connectors.data_connector import _DataHookSelector
from pytorch_lightning.utilities.signature_utils import is_param_in_hook_signature
from torch import nn

from lepton_exp.errors import ConfigError, one_line

log = logging.getLogger(__name__)


def on_cuda(accelerator: str) -> bool:
    """Whether ``trainer.accelerator`` puts this run on a CUDA GPU."""
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def resolve_precision(precision: Any, accelerator: str) -> Any:
    """``auto``: bf16-mixed on a GPU with bf16, 16-mixed (fp16 + scaler) on one without,
    32-true on CPU; any other value as given."""
    if precision != "auto":
        return precision
    if not on_cuda(accelerator) or not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def fused_optimizer(setting: Optional[bool], params: list) -> bool:
    """``optim.fused``: null = fused kernels when every parameter is on a CUDA device."""
    if setting is not None:
        return bool(setting)
    return bool(params) and all(p.is_cuda for p in params)


def fill_uninitialized_memory(fill: bool) -> None:
    """``trainer.fill_uninitialized_memory``: whether deterministic mode NaN-fills new tensors
    (``torch.empty`` and the like). The fill writes every output buffer once more before the
    kernel writes it: resnet8 at batch 128 on 2 CPU cores, 120 interleaved steps, +5.5 % a
    step with it, +0.0 % without, against a non-deterministic step. Process-wide, as
    ``torch.use_deterministic_algorithms`` (which Lightning sets from the same trainer)."""
    torch.utils.deterministic.fill_uninitialized_memory = bool(fill)


class NoProfiler(PassThroughProfiler):
    """Lightning's default (no profiling) for less: Lightning wraps every hook it calls in
    ``profiler.profile(name)`` (~70 a training step: each callback's and the module's hooks),
    and the default's is a generator-based context manager (~1.2 us to enter and leave);
    this one hands back one shared no-op context."""

    _nothing = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.nullcontext:  # type: ignore[override]
        return self._nothing


class TrainingEpochLoop(_TrainingEpochLoop):
    """Lightning's training epoch loop, which reads ``training_step``'s signature once (per
    function) instead of at every step: Lightning's ``_build_kwargs`` runs
    ``inspect.getfullargspec`` on it to learn whether it takes ``batch_idx`` (~11 us a step
    warm, one thread)."""

    _inspected: tuple[Any, bool] = (None, False)  # (the step's function, takes batch_idx)

    def _build_kwargs(self, kwargs: Any, batch: Any, batch_idx: int) -> Any:
        kwargs["batch"] = batch
        step = self.trainer.lightning_module.training_step
        function = getattr(step, "__func__", step)
        if function is not self._inspected[0]:
            # (Lightning's own test: a parameter named batch_idx, *args, or two after self)
            self._inspected = (function, is_param_in_hook_signature(step, "batch_idx",
                                                                     min_args=2))
        if self._inspected[1]:
            kwargs["batch_idx"] = batch_idx
        return kwargs


def use_lean_loops(trainer: pl.Trainer) -> None:
    """Puts ``TrainingEpochLoop`` in place of the Trainer's own, before any fit."""
    loop = trainer.fit_loop.epoch_loop
    trainer.fit_loop.epoch_loop = TrainingEpochLoop(trainer, min_steps=loop.min_steps,
                                                    max_steps=loop.max_steps)


class DataHookSelector(_DataHookSelector):
    """Lightning's choice of the module or the data module for each batch-transfer hook
    (``on_before_batch_transfer``, ``transfer_batch_to_device``, ``on_after_batch_transfer``),
    made once a fit instead of at every batch (two ``is_overridden`` checks a hook, 6 a
    step)."""

    def get_instance(self, hook_name: str) -> Any:
        chosen = self.__dict__.setdefault("_chosen", {})
        if hook_name not in chosen:
            chosen[hook_name] = super().get_instance(hook_name)
        return chosen[hook_name]


def use_lean_data_hooks(trainer: pl.Trainer) -> None:
    """Puts ``DataHookSelector`` in place of the one the Trainer made for this fit (none
    where a Lightning version keeps it elsewhere)."""
    connector = getattr(trainer, "_data_connector", None)
    selector = getattr(connector, "_datahook_selector", None)
    if type(selector) is _DataHookSelector:
        connector._datahook_selector = DataHookSelector(selector.model, selector.datamodule)


# The callback hooks Lightning calls at every batch, each on every callback of the Trainer
# (``pytorch_lightning.trainer.call._call_callback_hooks``, which calls only callable ones).
BATCH_HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_backward",
               "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad",
               "on_validation_batch_start", "on_validation_batch_end", "on_test_batch_start",
               "on_test_batch_end", "on_predict_batch_start", "on_predict_batch_end")


def skip_inherited_batch_hooks(callbacks: Iterable[pl.Callback]) -> None:
    """Leaves out of Lightning's per-batch calls the hooks each callback inherits from
    ``Callback`` (no-ops): a run's nine callbacks (with a logger) implement 9 of the 54
    calls Lightning makes to them a training step, and each call costs ~1 us (the
    profiler's action name, its context, the call). Such a hook becomes None on the
    callback, which Lightning's dispatch skips; the hooks a callback's class implements, or
    the instance was given (``LambdaCallback``), are called as before."""
    for callback in callbacks:
        for hook in BATCH_HOOKS:
            if hook not in vars(callback) and \
                    getattr(type(callback), hook) is getattr(pl.Callback, hook):
                setattr(callback, hook, None)


def has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(layer, nn.Conv2d) for layer in model.modules())


class ThroughputSettings(pl.Callback):
    """Applies ``trainer.channels_last`` and ``trainer.compile`` once the module is on its
    device, before the first step, keeps the garbage collector off the objects that live
    through the fit, and has the batch-transfer hooks' owner chosen once."""

    def __init__(self, channels_last: bool = True, compile_models: bool = False):
        self.channels_last = channels_last
        self.compile_models = compile_models
        self.applied: list[str] = []  # what this run switched on (for the record)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The objects alive now (torch, Lightning, the data: ~600k) are left out of Python's
        # garbage collection during the fit: a full collection scanning them takes ~0.3 s,
        # which the many small objects of each step's hooks otherwise trigger mid-epoch.
        gc.freeze()
        use_lean_data_hooks(trainer)
        models = _models(pl_module)
        if self.channels_last and pl_module.device.type == "cuda" and any(
                has_convolutions(model) for model in models.values()):
            pl_module.to(memory_format=torch.channels_last)
            self.applied.append("channels_last")
        if self.compile_models:
            for model in models.values():
                model.compile()
            self.applied.append("compile")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        gc.unfreeze()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        gc.unfreeze()
        if self.compile_models and _is_compile_error(exception):
            raise ConfigError(f"trainer.compile=true: torch.compile cannot compile this model "
                              f"({one_line(exception)[:300]}): set trainer.compile=false"
                              ) from exception


def _models(module: pl.LightningModule) -> dict[str, nn.Module]:
    """The student (``model``) and the teachers' models of a lepton-exp module."""
    models = {"model": module.model} if isinstance(getattr(module, "model", None),
                                                  nn.Module) else {}
    for index, teacher in enumerate(getattr(module, "teachers", [])):
        models[f"teacher{index}"] = teacher.model
    return models


def _is_compile_error(exception: BaseException) -> bool:
    try:
        from torch._dynamo.exc import BackendCompilerFailed, TorchDynamoException
    except ImportError:  # pragma: no cover - torch without dynamo
        return False
    chain: Optional[BaseException] = exception
    while chain is not None:
        if isinstance(chain, (TorchDynamoException, BackendCompilerFailed)):
            return True
        chain = chain.__cause__ or chain.__context__
    return False
