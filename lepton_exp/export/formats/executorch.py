"""ExecuTorch, for phones and edge devices: torch.export, then lowered with the XNNPACK
partitioner (its CPU kernels) to a ``.pte`` program that the ExecuTorch runtime runs.
Dynamic batch (and sequence length for text) up to the largest batch the run evaluates or
times with: ExecuTorch plans its memory for the largest shape. int8 (CNNs) is quantized for
XNNPACK with its own quantizer (symmetric, per-channel weights, PyTorch 2 export
quantization calibrated on training batches), not converted from quant=static_int8's
x86-quantized model: XNNPACK runs only its own int8 patterns. Transformers: float only."""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

from lepton_exp.errors import one_line
from lepton_exp.export.runtime import ExportError, Unsupported

RUNTIME = "ExecuTorch"
SUFFIX = ".pte"


@dataclass
class Schema:
    pass


def check(cfg):
    if importlib.util.find_spec("executorch") is None:
        yield "export=executorch needs executorch, not installed: pip install 'lepton-exp[deploy]'"


def _program(model, spec):
    import torch

    from lepton_exp.models.taps import positional

    try:  # (traced at the largest shape: ExecuTorch plans its memory from it)
        return torch.export.export(model, positional(spec.largest),
                                   dynamic_shapes=spec.torch_dynamic_shapes())
    except Exception as error:  # noqa: BLE001 - torch.export's errors run to pages
        raise ExportError(f"export=executorch: torch.export cannot capture this model: "
                          f"{one_line(error)[:300]}") from error


def _lower_and_save(program, path: Path) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from lepton_exp.tracking.record import publish

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lowered = to_edge_transform_and_lower(
            program, partitioner=[XnnpackPartitioner()]).to_executorch()
    partial = path.with_name(f".partial-{path.name}")
    partial.write_bytes(lowered.buffer)
    publish(partial, path)


def write(model, example, path: Path, options, spec) -> None:
    _lower_and_save(_program(model, spec), path)


def write_int8(model, example, path: Path, options, spec, calibration: list) -> None:
    if spec.is_text:
        raise Unsupported("ExecuTorch's XNNPACK int8 flow here covers CNNs; transformers "
                          "export float")
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(_program(model, spec).module(), quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    quantized = convert_pt2e(prepared)
    _lower_and_save(_program(quantized, spec), path)


def load(path: Path, threads: int):
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    # XNNPACK runs on ExecuTorch's one process-wide pool (all cores by default): sized to
    # export.threads, as ONNX Runtime's session is, so the runtimes are timed alike. (Safe
    # here: nothing else executes a program while the pool is rebuilt.)
    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)
    method = Runtime.get().load_program(str(path)).load_method("forward")

    def run(inputs):
        return method.execute([value.contiguous() for value in inputs])[0]

    return run
