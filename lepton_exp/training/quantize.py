"""The quantization step that ends a run when ``quant`` is set: the stage's trained float
model becomes int8 by the configured method (its entry in lepton_exp/quant/methods:
post-training, or after quantization-aware finetuning with the stage's logit distillation
terms), is tested, measured beside the float model and exported.

Record: ``test_int8/*`` beside the float model's ``test/*``; ``quant/*`` (int8) beside
``quant_float/*`` (float) for bytes and CPU latency; the ``quant`` block lists which layers
run int8 and which fell back to float, and why. Latency: the float model as it is, the int8
model as its method lowers it (oneDNN int8 kernels for static_int8 and qat, fbgemm's dynamic
int8 Linear as it is for dynamic_int8), timed in turns at batch 1 and ``quant.latency_batch``,
on the CPU; ``quant/latency_busy`` when other processes competed for the cores meanwhile
(the block's ``latency`` keeps each model's spread and the load average).
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import OmegaConf
from pytorch_lightning import Callback
from pytorch_lightning.utilities import rank_zero_only

from lepton_exp.config.registries import QUANT_METHODS
from lepton_exp.measure import latency_report, state_bytes
from lepton_exp.quant.coverage import coverage_summary
from lepton_exp.quant.export import export_path, export_quantized
from lepton_exp.tracking.rundir import check_checkpoint
from lepton_exp.training.classify import ClassificationModule
from lepton_exp.training.context import StageContext, StageOutput
from lepton_exp.training.distill import distillation_module, fit_distillation
from lepton_exp.training.parallel import measured_alone
from lepton_exp.training.trainer import build_trainer, evaluate

log = logging.getLogger(__name__)
EXPORT_STEM = "model_int8"


class GraphTrainMode(Callback):
    """Training steps run an exported graph in its training form again after validation.

    Lightning puts modules back into training mode by setting their ``training`` flags, which
    leaves an exported graph (pt2e QAT) in the evaluation form ``.eval()`` rewrote it to:
    batch norm on running statistics and no dropout for the rest of the finetuning. The
    rewritten training form is not the captured one op for op, so every fit starts from it
    (a resumed fit then trains with the same ops as the fit it continues)."""

    def __init__(self) -> None:
        self.evaluated = False

    def on_fit_start(self, trainer, pl_module) -> None:
        pl_module.model.eval()
        pl_module.model.train()

    def on_validation_start(self, trainer, pl_module) -> None:
        self.evaluated = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.evaluated:
            pl_module.model.train()  # pt2e's train(): rewrites the graph's ops
            self.evaluated = False


def _finetune(ctx: StageContext, teachers: list, model: torch.nn.Module, *, lr: float,
              epochs: int, distill: bool, directory: str) -> None:
    """What a quant method that trains calls (qat: the fake-quantized graph): ``epochs`` of
    finetuning at ``lr`` in ``run_dir/directory``, with the stage's distillation terms from
    its teachers when ``distill``, else plain cross-entropy."""
    cfg = ctx.cfg.copy()
    cfg.optim.lr = lr
    if not distill:
        cfg.distill.terms = {}
    teachers = teachers if cfg.distill.terms else []
    module, _ = distillation_module(cfg, ctx.datamodule, model, teachers)
    # An attempt stopped while finetuning (the model it starts from is the same: the stage's
    # own resume restored it) continues from its last checkpoint.
    last = ctx.run_dir / directory / "checkpoints" / "last.ckpt"
    if ctx.resume_from and last.is_file():
        check_checkpoint(last)
    trainer, checkpoints = build_trainer(
        cfg, ctx.run_dir / directory, ctx.loggers, max_epochs=epochs,
        callbacks=[GraphTrainMode()],
        resume_from=last if ctx.resume_from and last.is_file() else None,
        enable_model_summary=False)
    fit_distillation(trainer, module, ctx.datamodule, checkpoints, test=False)


def _latencies(model, quantized, lower: Callable, example, batch_size: int
               ) -> dict[str, dict]:
    """{float, int8} -> {latency_ms_b1, latency_ms_b<batch_size>}, timed in turns, and
    ``timing``: each side's spread and how busy the machine was (measure.latency_report)."""
    reports = latency_report([model, quantized], example, batch_size,
                             models_at=lambda inputs: [model, lower(quantized, inputs)])
    timings: dict[str, dict] = {"timing": {"busy": reports[0]["latency_busy"]}}
    for side, report in zip(("float", "int8"), reports, strict=True):
        timings[side] = {key: value for key, value in report.items()
                         if key.startswith("latency_ms_")}
        timings["timing"][side] = report["latency"]
    return timings


def quantize_output(ctx: StageContext, output: StageOutput) -> StageOutput:
    """``output`` with its model quantized as ``quant`` says (run when quant != none)."""
    cfg, datamodule = ctx.cfg, ctx.datamodule
    quant, method = cfg.quant, QUANT_METHODS.get(cfg.quant.method)
    model = copy.deepcopy(output.model).cpu().eval()  # int8 kernels are CPU kernels
    finetune = functools.partial(_finetune, ctx, output.teachers)
    quantized, layers = method.quantize(model, quant, datamodule, finetune)
    coverage = coverage_summary(layers)
    if coverage["fallback"]:
        log.warning("int8: %d layer(s) stay float: %s", coverage["float_layers"],
                    "; ".join(f"{name} ({layer['why']})"
                              for name, layer in coverage["fallback"].items()))
    cpu = OmegaConf.merge(cfg.trainer, {"accelerator": "cpu", "devices": 1})
    metrics = evaluate(ClassificationModule(quantized, datamodule.info, cfg.optim,
                                            cfg.scheduler), datamodule, "test_int8", cpu)
    example = datamodule.example_batch(1, full_length=True)
    timings = measured_alone(lambda: _latencies(model, quantized, method.lower, example,
                                                quant.latency_batch))
    sizes = {"float": state_bytes(model), "int8": state_bytes(quantized)}
    exported = export_path(ctx.run_dir / EXPORT_STEM, quantized)
    if rank_zero_only.rank == 0:  # DDP ranks quantize alike; one writes the file
        export_quantized(quantized, datamodule.example_batch(2), exported)
    metrics.update(_size_and_speed(sizes, timings, exported, coverage))
    output.metrics.update(metrics)
    output.extra["quant"] = {"method": quant.method, "exported": str(exported),
                             "float": {"size_bytes": sizes["float"], **timings["float"]},
                             "int8": {"size_bytes": sizes["int8"], **timings["int8"],
                                      "file_bytes": metrics["quant/file_bytes"]},
                             "layers": layers, "fallback": coverage["fallback"],
                             "latency": timings["timing"]}  # spreads, load, busy
    return output


def _size_and_speed(sizes: dict[str, int], timings: dict[str, dict], exported,
                    coverage: dict[str, Any]) -> dict[str, Any]:
    """``quant/*`` (int8) and ``quant_float/*`` (float) bytes, latencies and their ratios."""
    metrics: dict[str, Any] = {}
    for side, prefix in (("float", "quant_float"), ("int8", "quant")):
        metrics[f"{prefix}/size_bytes"] = sizes[side]
        metrics.update({f"{prefix}/{key}": value for key, value in timings[side].items()})
        metrics[f"{prefix}/latency_busy"] = timings["timing"]["busy"]  # timed on a busy CPU
    metrics["quant/size_reduction"] = round(sizes["float"] / sizes["int8"], 4)
    for key, value in timings["int8"].items():
        metrics[f"quant/speedup_{key.removeprefix('latency_ms_')}"] = round(
            timings["float"][key] / value, 4)
    metrics["quant/file_bytes"] = exported.stat().st_size if exported.exists() else None
    metrics["quant/int8_layers"] = coverage["int8_layers"]
    metrics["quant/float_layers"] = coverage["float_layers"]
    return metrics


def quant_summary(record: dict[str, Any]) -> dict[str, Any] | None:
    """The pipeline table's view of a run's quantization (None when it has none)."""
    block = record.get("quant")
    if not block:
        return None
    return {key: block[key] for key in ("method", "float", "int8", "exported")}
