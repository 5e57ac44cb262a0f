"""The export step that ends a run when ``export`` names deployment formats (after
quantization, when there is one): the run's model written for each format's runtime
(lepton_exp/export/formats), in float and, for a quantized run, int8; each file loaded back
into its runtime, compared with the PyTorch model on the first test batches, tested on the
whole test set there, and timed there in turns with the eager model.

Record: ``deploy`` (per export: file, runtime, precision, bytes, max abs logit difference,
top-1 agreement, latencies with their spread), ``test_<format>[_int8]/*`` beside ``test/*``,
``deploy/<format>[_int8]/*`` for bytes and latencies. The folder ``deploy/`` runs alone: the
exports, ``inputs.json`` (normalisation, input size, channel order, class names) and, for
text, the tokenizer's files.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from omegaconf import OmegaConf
from torch import nn
from pytorch_lightning.utilities import rank_zero_only

from lepton_exp.config.registries import EXPORT_FORMATS, NONE
from lepton_exp.export.runtime import (InputSpec, RuntimeModel, Unsupported, compare,
                                       exportable, input_spec, write_inputs_file)
from lepton_exp.measure import latency_report
from lepton_exp.training.classify import ClassificationModule
from lepton_exp.training.context import StageContext, StageOutput
from lepton_exp.training.parallel import measured_alone
from lepton_exp.training.trainer import evaluate

log = logging.getLogger(__name__)
DEPLOY_DIR = "deploy"


@dataclass
class _Exporting:
    """What every export of one run shares."""

    eager: nn.Module  # what the formats export (text: called positionally)
    reference: nn.Module  # the same model, called as the run calls it
    example: Any
    spec: InputSpec
    calibration: Optional[list]
    checked_on: list
    directory: Path
    threads: int
    test: Callable[[nn.Module, str], dict[str, float]]  # (model, prefix) -> test metrics


def deploy_output(ctx: StageContext, output: StageOutput) -> StageOutput:
    """``output`` with its model exported as ``export.formats`` say (run when any is set)."""
    cfg, datamodule = ctx.cfg, ctx.datamodule
    export = cfg.export
    directory = ctx.run_dir / DEPLOY_DIR
    directory.mkdir(parents=True, exist_ok=True)
    example = datamodule.example_batch(2)
    eager = exportable(output.model, example)
    largest = max(export.latency_batch, datamodule.cfg.batch_size,
                  datamodule.cfg.get("eval_batch_size") or 0)
    variants = ("float", "int8") if cfg.quant.method != NONE else ("float",)
    cpu = OmegaConf.merge(cfg.trainer, {"accelerator": "cpu", "devices": 1})
    job = _Exporting(
        eager, getattr(eager, "model", eager), example, input_spec(datamodule, largest),
        datamodule.unaugmented_batches(export.calibration_batches) if "int8" in variants
        else None, _first_test_batches(datamodule, export.check_batches), directory,
        export.threads or torch.get_num_threads(),
        lambda model, prefix: evaluate(ClassificationModule(
            model, datamodule.info, cfg.optim, cfg.scheduler), datamodule, prefix, cpu))
    exports: dict[str, dict[str, Any]] = {}
    runtimes: dict[str, RuntimeModel] = {}
    if rank_zero_only.rank == 0:  # DDP ranks hold the same model: one writes and measures
        for name, options in export.formats.items():
            for precision in variants:
                key = name if precision == "float" else f"{name}_int8"
                exports[key], runtime = _export(job, key, name, options, precision, export)
                if runtime is not None:
                    runtimes[key] = runtime
                    output.metrics.update({f"test_{key}/{metric}": value for metric, value
                                           in exports[key]["test"].items()})
    if runtimes:
        one = datamodule.example_batch(1, full_length=True)
        reports = measured_alone(lambda: latency_report([job.reference, *runtimes.values()],
                                                        one, export.latency_batch))
        # the reference first, tested as exported (test/* may be another epoch's weights)
        exports = {"eager": {"runtime": "PyTorch (eager)", "precision": "float",
                             "test": _unprefixed(job.test(output.model, "test_eager")),
                             **_latencies(reports[0])}, **exports}
        for key, report in zip(runtimes, reports[1:], strict=True):
            exports[key].update(_latencies(report))
            output.metrics.update({f"deploy/{key}/{name}": value
                                   for name, value in exports[key].items()
                                   if name.startswith("latency_ms_") or name in (
                                       "file_bytes", "max_abs_diff", "top1_agreement")})
    if rank_zero_only.rank == 0:
        write_inputs_file(directory, _inputs(datamodule, job.spec.names, directory))
    output.extra["deploy"] = {"dir": str(directory), "threads": job.threads,
                              "exports": exports}
    return output


def _export(job: _Exporting, key: str, name: str, options, precision: str, export
            ) -> tuple[dict[str, Any], Optional[RuntimeModel]]:
    """One file (``key``: format ``name`` in ``precision``): written, loaded into its
    runtime, compared with PyTorch, tested there."""
    entry = EXPORT_FORMATS.get(name)
    options = OmegaConf.merge(OmegaConf.structured(entry.Schema), options or {})
    path = job.directory / f"model{'' if precision == 'float' else '_int8'}{entry.SUFFIX}"
    try:
        if precision == "float":
            entry.write(job.eager, job.example, path, options, job.spec)
        else:
            entry.write_int8(job.eager, job.example, path, options, job.spec, job.calibration)
    except Unsupported as why:
        log.info("export %s: %s", key, why)
        return {"format": name, "precision": precision, "skipped": str(why)}, None
    runtime = RuntimeModel(entry.load(path, job.threads), f"{entry.RUNTIME} {precision}")
    agreement = compare(job.reference, runtime, job.checked_on,
                        export.tolerance if precision == "float" else None,
                        export.min_agreement, f"export {key} ({path.name})")
    return {"format": name, "runtime": entry.RUNTIME, "precision": precision,
            "path": str(path), "file_bytes": path.stat().st_size, **agreement,
            "test": _unprefixed(job.test(runtime, f"test_{key}"))}, runtime


def _unprefixed(metrics: dict[str, float]) -> dict[str, float]:
    return {key.split("/", 1)[1]: value for key, value in metrics.items()}


def _latencies(report: dict[str, Any]) -> dict[str, Any]:
    return {**{key: value for key, value in report.items() if key.startswith("latency_ms_")},
            "latency_busy": report["latency_busy"], "latency": report["latency"]}


def _first_test_batches(datamodule, count: int) -> list:
    """The inputs of the first ``count`` test batches (the main test split)."""
    loaders = datamodule.test_dataloader()
    loader = loaders[0] if isinstance(loaders, list) else loaders
    return [batch[0] for batch in itertools.islice(loader, count)]


def _inputs(datamodule, names: tuple[str, ...], directory: Path) -> dict[str, Any]:
    """What a caller of the exports must feed them (``deploy/inputs.json``)."""
    spec = {**datamodule.input_description(), "inputs": list(names)}
    if datamodule.info.is_text:
        spec["tokenizer"] = _save_tokenizer(datamodule, directory)
    return spec


def _save_tokenizer(datamodule, directory: Path) -> str | None:
    """The tokenizer's files in ``directory/tokenizer`` (None: a tokenizer without files)."""
    save = getattr(datamodule.tokenizer, "save_pretrained", None)
    if save is None:
        return None
    save(str(directory / "tokenizer"))
    return "tokenizer"
