"""Post-training static int8 (CNNs): weights and activations int8, activation ranges
calibrated on training batches, through PyTorch 2 export quantization (x86 quantizer)."""

from __future__ import annotations

from dataclasses import dataclass

from lepton_exp.config.checks import check_range
from lepton_exp.config.schemas import QuantConfig, is_text_data


@dataclass
class Schema(QuantConfig):
    calibration_batches: int = 8  # training batches (no augmentation) observed


def check(cfg):
    yield check_range("quant.calibration_batches", cfg.quant.calibration_batches, 1)
    yield for_cnns(cfg)


def for_cnns(cfg) -> str | None:
    """The x86 quantizer's patterns are conv/linear ones: transformers go dynamic."""
    if is_text_data(cfg):
        return (f"quant={cfg.quant.method} is for CNNs: quantize transformers with "
                "quant=dynamic_int8 (int8 Linear layers)")
    return None


def quantize(model, quant, datamodule, finetune):
    from lepton_exp.quant import pt2e

    quantized = pt2e.quantize_static(
        model, datamodule.unaugmented_batches(quant.calibration_batches), quant.skip)
    return quantized, pt2e.layer_coverage(quantized, quant.skip)


def lower(quantized, inputs):
    """The portable int8 graph on oneDNN int8 kernels, for ``inputs``' shape."""
    from lepton_exp.quant import pt2e

    return pt2e.lower_to_x86(quantized, inputs)
