"""Post-training dynamic int8 of Linear layers (weights int8 per tensor, activations
quantized per batch at run time), the usual choice for BERT-style students.

This is ``torch.ao.quantization.quantize_dynamic`` (x86 fbgemm kernels), not torchao's
``quantize_``: measured on this project's 2-core x86 CPU with bert_mini at 64 tokens,
torchao's int8 tensors ran 14x *slower* than float32 without ``torch.compile`` while
fbgemm's ran 1.2-1.4x faster (results/BENCHMARKS.md).
"""

from __future__ import annotations

import copy
import warnings
from typing import Sequence

import torch
from torch import nn

from lepton_exp.measure import PRUNABLE


def quantize_dynamic_linear(model: nn.Module, skip: Sequence[str] = ()) -> nn.Module:
    """Every Linear layer int8, except those in (or under) the modules named in ``skip``."""
    from lepton_exp.quant.pt2e import check_skip, is_skipped

    check_skip(model, skip)
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice
        warnings.simplefilter("ignore")
        qconfig = torch.ao.quantization.default_dynamic_qconfig
        spec = {name: qconfig for name, module in model.named_modules()
                if isinstance(module, nn.Linear) and not is_skipped(name, skip)}
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), spec,
                                                      dtype=torch.qint8)


def layer_coverage(float_model: nn.Module, quantized: nn.Module, skip: Sequence[str] = ()
                   ) -> dict[str, dict[str, str]]:
    """Every conv/linear/embedding of ``float_model``: ``int8`` in ``quantized`` or a float
    fallback, with why."""
    layers: dict[str, dict[str, str]] = {}
    for name, module in float_model.named_modules():
        if not isinstance(module, (*PRUNABLE, nn.Embedding)):
            continue
        if not isinstance(quantized.get_submodule(name), (nn.Linear, *PRUNABLE, nn.Embedding)):
            layers[name] = {"runs": "int8"}
        else:
            why = ("kept float by quant.skip" if isinstance(module, nn.Linear) else
                   f"dynamic quantization covers Linear layers only, not "
                   f"{type(module).__name__}")
            layers[name] = {"runs": "float", "why": why,
                            "fallback": f"float32 {type(module).__name__}"}
    return layers
