"""Post-training dynamic int8: Linear weights int8, activations quantized per batch at run
time (fbgemm kernels), no calibration data; the usual choice for BERT-style students."""

from __future__ import annotations

from lepton_exp.config.schemas import QuantConfig as Schema  # noqa: F401 - the entry's schema


def quantize(model, quant, datamodule, finetune):
    from lepton_exp.quant import dynamic

    quantized = dynamic.quantize_dynamic_linear(model, quant.skip)
    return quantized, dynamic.layer_coverage(model, quantized, quant.skip)


def lower(quantized, inputs):
    return quantized  # eager modules on fbgemm's int8 Linear kernels already
