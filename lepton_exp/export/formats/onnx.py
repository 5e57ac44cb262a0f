"""ONNX, for ONNX Runtime (and TensorRT, OpenVINO, ...): torch's dynamo exporter, dynamic
batch (and sequence length for text), graph optimised by onnxscript's optimizer as it
exports. int8 (QDQ) comes from the float file through onnxruntime.quantization: static,
per-channel weights and activation ranges calibrated on training batches for CNNs;
dynamic (int8 MatMul weights, activations per batch) for transformers, as quant=dynamic_int8.
Differs from torch's own int8 path: the QDQ graph is quantized by ONNX Runtime's tool
from the float export (what ONNX Runtime's kernels are tuned for), not converted from
the PyTorch int8 model, so its int8 accuracy is measured on its own."""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

from lepton_exp.errors import one_line
from lepton_exp.export.runtime import ExportError

RUNTIME = "ONNX Runtime"
SUFFIX = ".onnx"
PACKAGES = ("onnx", "onnxruntime", "onnxscript")


@dataclass
class Schema:
    opset: int = 18  # the ONNX opset the exporter targets (onnxscript supports 18 and up)


def check(cfg):
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        yield (f"export=onnx needs {', '.join(missing)}, not installed: "
               "pip install 'lepton-exp[deploy]'")
    opset = cfg.export.formats.onnx.opset if "onnx" in cfg.export.formats else 18
    if not 18 <= opset <= 23:
        yield f"export.formats.onnx.opset={opset}: torch's ONNX exporter writes opsets 18 to 23"


# their INFO lines (each pass of the optimizer, the quantizer's shape inference) would fill
# the run's log under Hydra's INFO root logger
QUIET = ("onnxscript", "onnx_ir", "onnxruntime", "torch.onnx")


def write(model, example, path: Path, options, spec) -> None:
    import logging

    import torch

    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)

    from lepton_exp.models.taps import positional

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                model, positional(example), dynamo=True, opset_version=options.opset,
                input_names=list(spec.names), output_names=["logits"],
                dynamic_shapes=spec.torch_dynamic_shapes(), verbose=False)
        except Exception as error:  # noqa: BLE001 - the exporter's errors run to pages
            raise ExportError(f"export=onnx: torch's ONNX exporter failed on this model: "
                              f"{one_line(error)[:300]}: try another opset "
                              "(export.formats.onnx.opset) or export=executorch") from error
    program.save(str(path))


def write_int8(model, example, path: Path, options, spec, calibration: list) -> None:
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = path.with_name(f".float-{path.name}")
    write(model, example, source, options, spec)
    try:
        if spec.is_text:  # transformers: int8 MatMul weights, activations per batch
            quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8)
            return
        prepared = path.with_name(f".prepared-{path.name}")
        quant_pre_process(str(source), str(prepared))  # shapes inferred, graph simplified

        class Batches(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter(calibration)

            def get_next(self):
                batch = next(self.batches, None)
                return None if batch is None else {spec.names[0]: batch.numpy()}

        quantize_static(str(prepared), str(path), Batches(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        prepared.unlink(missing_ok=True)
    finally:
        source.unlink(missing_ok=True)


def load(path: Path, threads: int):
    import numpy as np
    import onnxruntime
    import torch

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # ONNX Runtime's threads spin for a while after each run by default: timed in turns with
    # the eager model, they took its cores (eager resnet20 at batch 1: 2.2 ms alone, 6.4 ms
    # in turns with a spinning session, 2.3 ms without); its own latency does not change.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    names = [item.name for item in session.get_inputs()]

    def run(inputs):
        feed = {name: np.ascontiguousarray(value.numpy()) for name, value in
                zip(names, inputs, strict=True)}
        return torch.from_numpy(session.run(None, feed)[0])

    return run
