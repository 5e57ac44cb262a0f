"""The quantization step that ends a run when ``quant`` is set: the stage's trained float
model becomes int8 (post-training, or after quantization-aware finetuning with the stage's
logit distillation terms), is tested, measured beside the float model and exported.

Record: ``test_int8/*`` beside the float model's ``test/*``; ``quant/*`` (int8) beside
``quant_float/*`` (float) for bytes and CPU latency; the ``quant`` block lists which layers
run int8 and which fell back to float, and why. Latency: the float model as it is, the int8
graph lowered to oneDNN int8 kernels (static_int8, qat) or fbgemm's dynamic int8 Linear
(dynamic_int8), timed in turns at batch 1 and ``quant.latency_batch``, on the CPU.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from omegaconf import OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from lepton_exp.models.taps import repeat_batch
from lepton_exp.prune.measure import latencies_ms
from lepton_exp.quant import dynamic, pt2e
from lepton_exp.quant.export import export_path, export_quantized
from lepton_exp.quant.measure import coverage_summary, state_bytes
from lepton_exp.stages.classify import ClassificationModule
from lepton_exp.stages.context import StageContext, StageOutput
from lepton_exp.training.parallel import measured_alone
from lepton_exp.training.trainer import evaluate

log = logging.getLogger(__name__)
EXPORT_STEM = "model_int8"


def calibration_batches(datamodule, batches: int) -> list[torch.Tensor]:
    """The first ``batches`` training batches, without augmentation (inference inputs)."""
    size = datamodule.cfg.batch_size
    samples = datamodule.example_batch(batches * size)
    return [chunk for chunk in samples.split(size) if len(chunk) > 0]


def _qat(ctx: StageContext, model: torch.nn.Module, teachers: list) -> torch.fx.GraphModule:
    """Fake-quantized finetuning with the stage's logit terms, then conversion to int8."""
    from lepton_exp.stages.distill import distillation_module, fit_distillation
    from lepton_exp.training.trainer import build_trainer

    cfg, quant = ctx.cfg, ctx.cfg.quant
    qat_cfg = cfg.copy()
    qat_cfg.optim.lr = quant.lr
    if not quant.distill:
        qat_cfg.distill.terms = {}
    teachers = teachers if qat_cfg.distill.terms else []
    prepared = pt2e.prepare_qat(model, ctx.datamodule.example_batch(2), quant.skip)
    module, _ = distillation_module(qat_cfg, ctx.datamodule, prepared, teachers)
    trainer, _ = build_trainer(qat_cfg, ctx.run_dir / "qat", ctx.loggers,
                               max_epochs=quant.epochs, enable_model_summary=False)
    fit_distillation(trainer, module, ctx.datamodule)
    return pt2e.convert(prepared)


def _latencies(model, quantized, method: str, example, batch_size: int) -> dict[str, dict]:
    """{float, int8} -> {latency_ms_b1, latency_ms_b<batch_size>}, timed in turns."""
    timings: dict[str, dict] = {"float": {}, "int8": {}}
    for size in (1, batch_size):
        inputs = repeat_batch(example, size)
        runnable = (pt2e.lower_to_x86(quantized, inputs) if method != "dynamic_int8"
                    else quantized)
        float_ms, int8_ms = latencies_ms([model, runnable], inputs,
                                         repeats=20 if size == 1 else 10)
        timings["float"][f"latency_ms_b{size}"] = round(float_ms, 4)
        timings["int8"][f"latency_ms_b{size}"] = round(int8_ms, 4)
    return timings


def quantize_output(ctx: StageContext, output: StageOutput) -> StageOutput:
    """``output`` with its model quantized as ``quant`` says (run when quant != none)."""
    cfg, datamodule = ctx.cfg, ctx.datamodule
    quant = cfg.quant
    model = copy.deepcopy(output.model).cpu().eval()  # int8 kernels are CPU kernels
    if quant.method == "dynamic_int8":
        quantized = dynamic.quantize_dynamic_linear(model, quant.skip)
        layers = dynamic.layer_coverage(model, quantized, quant.skip)
    else:
        if quant.method == "qat":
            quantized = _qat(ctx, model, output.teachers)
        else:
            quantized = pt2e.quantize_static(model, calibration_batches(
                datamodule, quant.calibration_batches), quant.skip)
        layers = pt2e.layer_coverage(quantized, quant.skip)
    coverage = coverage_summary(layers)
    if coverage["fallback"]:
        log.warning("int8: %d layer(s) stay float: %s", coverage["float_layers"],
                    "; ".join(f"{name} ({layer['why']})"
                              for name, layer in coverage["fallback"].items()))
    cpu = OmegaConf.merge(cfg.trainer, {"accelerator": "cpu", "devices": 1})
    metrics = evaluate(ClassificationModule(quantized, datamodule.info, cfg.optim,
                                            cfg.scheduler), datamodule, "test_int8", cpu)
    example = datamodule.example_batch(1, full_length=True)
    timings = measured_alone(lambda: _latencies(model, quantized, quant.method, example,
                                                quant.latency_batch))
    sizes = {"float": state_bytes(model), "int8": state_bytes(quantized)}
    exported = export_path(ctx.run_dir / EXPORT_STEM, quantized)
    if rank_zero_only.rank == 0:  # DDP ranks quantize alike; one writes the file
        export_quantized(quantized, datamodule.example_batch(2), exported)
    for side, prefix in (("float", "quant_float"), ("int8", "quant")):
        metrics[f"{prefix}/size_bytes"] = sizes[side]
        metrics.update({f"{prefix}/{key}": value for key, value in timings[side].items()})
    metrics["quant/size_reduction"] = round(sizes["float"] / sizes["int8"], 4)
    for key, value in timings["int8"].items():
        metrics[f"quant/speedup_{key.removeprefix('latency_ms_')}"] = round(
            timings["float"][key] / value, 4)
    metrics["quant/file_bytes"] = exported.stat().st_size if exported.exists() else None
    metrics["quant/int8_layers"] = coverage["int8_layers"]
    metrics["quant/float_layers"] = coverage["float_layers"]
    output.metrics.update(metrics)
    output.extra["quant"] = {"method": quant.method, "exported": str(exported),
                             "float": {"size_bytes": sizes["float"], **timings["float"]},
                             "int8": {"size_bytes": sizes["int8"], **timings["int8"],
                                      "file_bytes": metrics["quant/file_bytes"]},
                             "layers": layers, "fallback": coverage["fallback"]}
    return output


def quant_summary(record: dict[str, Any]) -> dict[str, Any] | None:
    """The pipeline table's view of a run's quantization (None when it has none)."""
    block = record.get("quant")
    if not block:
        return None
    return {key: block[key] for key in ("method", "float", "int8", "exported")}
