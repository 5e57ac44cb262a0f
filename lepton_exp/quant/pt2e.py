"""Static int8 (PTQ) and quantization-aware training through PyTorch 2 export quantization.

The model is captured as an ATen graph (``torch.export``, batch size left dynamic), the x86
quantizer annotates it (int8 activations per tensor, int8 weights per channel, conv+bn+relu
and add patterns fused), observers or fake-quantizers are inserted, and ``convert`` turns
the graph into quantize/dequantize pairs around float ops with int8 weights. That graph is
portable (torch.export files); :func:`lower_to_x86` turns it into oneDNN int8 kernels for
one input shape, which is how it runs fast on an x86 CPU.
"""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Sequence

import torch
from torch import nn

from lepton_exp.errors import LeptonError, one_line
from lepton_exp.models.taps import repeat_batch

MAX_BATCH = 1 << 16


class QuantizationError(LeptonError):
    pass


def _imports():
    # torchao registers a few pytree constants on import; torch's warnings (and log lines)
    # about how it does so say nothing to users.
    pytree_log = logging.getLogger("torch.utils._pytree")
    level = pytree_log.level
    pytree_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchao.quantization import pt2e
            from torchao.quantization.pt2e import quantize_pt2e
            from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    finally:
        pytree_log.setLevel(level)
    return pt2e, quantize_pt2e, x86


def capture(model: nn.Module, example: torch.Tensor, train: bool = False
            ) -> torch.fx.GraphModule:
    """``model`` as an exported ATen graph whose batch dimension stays dynamic."""
    # torch.export specialises a dimension of size 1: capture with at least two samples
    example = repeat_batch(example[:1], 2) if len(example) < 2 else example
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    model.train(train)
    try:
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()
    except Exception as error:  # noqa: BLE001 - torch.export's errors are many and long
        raise QuantizationError(
            f"cannot capture {type(model).__name__} as a graph for int8 "
            f"(torch.export: {one_line(error)[:200]}): quant=dynamic_int8 quantizes Linear "
            "layers without capturing a graph") from error


def check_skip(model: nn.Module, skip: Sequence[str]) -> None:
    """Every name in ``skip`` (quant.skip) is a module of ``model``."""
    names = dict(model.named_modules())
    for name in skip:
        if name not in names or not name:
            layers = [n for n, m in names.items() if isinstance(m, (nn.Conv2d, nn.Linear))]
            raise QuantizationError(f"quant.skip names '{name}', which is not a module of "
                                    f"the model: pick from {', '.join(layers[:12])}"
                                    f"{', ...' if len(layers) > 12 else ''}")


def _quantizer(qat: bool, skip: Sequence[str] = ()):
    _, _, x86 = _imports()
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config(is_qat=qat))
    for name in skip:  # left unannotated: float32 ops between dequantize and quantize
        quantizer.set_module_name_qconfig(name, None)
    return quantizer


def quantize_static(model: nn.Module, calibration: Sequence[torch.Tensor],
                    skip: Sequence[str] = ()) -> torch.fx.GraphModule:
    """Post-training static int8: observers see ``calibration`` (batches of inputs);
    modules named in ``skip`` stay float."""
    _, quantize_pt2e, _ = _imports()
    check_skip(model, skip)
    prepared = quantize_pt2e.prepare_pt2e(capture(copy.deepcopy(model), calibration[0]),
                                          _quantizer(qat=False, skip=skip))
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    return convert(prepared)


def prepare_qat(model: nn.Module, example: torch.Tensor, skip: Sequence[str] = ()
                ) -> torch.fx.GraphModule:
    """A trainable graph that simulates int8 (fake quantization, batch norm kept apart from
    the conv until conversion); ``.train()``/``.eval()`` work on it as on any module."""
    pt2e, quantize_pt2e, _ = _imports()
    check_skip(model, skip)
    prepared = quantize_pt2e.prepare_qat_pt2e(capture(copy.deepcopy(model), example, train=True),
                                              _quantizer(qat=True, skip=skip))
    pt2e.allow_exported_model_train_eval(prepared)  # Lightning switches modes itself
    return prepared


def convert(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The int8 graph of a calibrated or QAT-trained one, holding only the tensors it uses."""
    pt2e, quantize_pt2e, _ = _imports()
    pt2e.move_exported_model_to_eval(prepared)
    quantized = quantize_pt2e.convert_pt2e(prepared)
    drop_unused_tensors(quantized)
    pt2e.allow_exported_model_train_eval(quantized)
    return quantized


def drop_unused_tensors(graph_module: torch.fx.GraphModule) -> None:
    """Remove parameters and buffers no graph node reads (the float weights that conversion
    replaced with int8 constants), so size and exported files count what runs."""
    used = {node.target for node in graph_module.graph.nodes if node.op == "get_attr"}
    names = [name for name, _ in [*graph_module.named_parameters(),
                                  *graph_module.named_buffers()]]
    for name in names:
        if name not in used:
            owner, _, attribute = name.rpartition(".")
            delattr(graph_module.get_submodule(owner) if owner else graph_module, attribute)


def lower_to_x86(quantized: torch.fx.GraphModule, example: torch.Tensor) -> nn.Module:
    """The int8 graph on oneDNN int8 kernels, for inputs of ``example``'s shape only."""
    pt2e, _, _ = _imports()
    from torchao.quantization.pt2e.lowering import lower_pt2e_quantized_to_x86

    with torch.no_grad():
        lowered = lower_pt2e_quantized_to_x86(copy.deepcopy(quantized), (example,))
    pt2e.allow_exported_model_train_eval(lowered)  # timing puts models in eval mode
    return lowered


_WEIGHTED = {torch.ops.aten.conv1d.default: "conv", torch.ops.aten.conv2d.default: "conv",
             torch.ops.aten.linear.default: "linear"}


def _dequantized(node) -> bool:
    return getattr(node, "op", None) == "call_function" and "dequantize" in str(node.target)


def is_skipped(name: str, skip: Sequence[str]) -> bool:
    """``name`` is a module named in ``skip`` (quant.skip) or inside one."""
    return any(name == prefix or name.startswith(f"{prefix}.") for prefix in skip)


def layer_coverage(quantized: torch.fx.GraphModule, skip: Sequence[str] = ()
                   ) -> dict[str, dict[str, str]]:
    """Every conv/linear of the graph: ``int8`` or ``float`` (a fallback, with why)."""
    layers: dict[str, dict[str, str]] = {}
    for node in quantized.graph.nodes:
        if node.op != "call_function" or node.target not in _WEIGHTED:
            continue
        stack = node.meta.get("nn_module_stack") or {}
        name = list(stack.values())[-1][0] if stack else node.name
        inputs, weight = node.args[0], node.args[1]
        if _dequantized(inputs) and _dequantized(weight):
            layers[name] = {"runs": "int8"}
        else:
            missing = [part for part, ok in (("input", _dequantized(inputs)),
                                             ("weight", _dequantized(weight))) if not ok]
            why = ("kept float by quant.skip" if is_skipped(name, skip) else
                   f"the x86 quantizer left its {' and '.join(missing)} unquantized")
            layers[name] = {"runs": "float", "why": why,
                            "fallback": f"float32 {_WEIGHTED[node.target]}"}
    return layers
