"""Quantization-aware finetuning (CNNs): static_int8's scheme simulated (fake quantization)
for ``epochs`` epochs at ``lr``, with the stage's logit distillation terms (kd, dkd) from its
float teacher when ``distill`` is true, then converted to int8."""

from __future__ import annotations

from dataclasses import dataclass

from lepton_exp.config.checks import check_range, term_class
from lepton_exp.config.schemas import QuantConfig
from lepton_exp.quant.methods.static_int8 import for_cnns, lower  # noqa: F401 - same graph

DIRECTORY = "qat"  # the finetuning's run directory, beside the float training's
ARTEFACTS = (DIRECTORY,)  # what it writes into the run directory (set aside with the run)


@dataclass
class Schema(QuantConfig):
    epochs: int = 2  # finetuning epochs
    lr: float = 0.001  # the optimizer's lr (optim's other settings, scheduler's shape)
    distill: bool = True  # keep the stage's logit terms (kd, dkd) from its teacher


def check(cfg):
    quant = cfg.quant
    yield check_range("quant.epochs", quant.epochs, 1)
    yield check_range("quant.lr", quant.lr, 0, low_open=True)
    yield for_cnns(cfg)
    if quant.distill:
        feature_terms = [name for name in cfg.distill.terms or {}
                         if term_class(name).needs != "logits"]
        if feature_terms:
            yield (f"quant=qat distils logits only (kd, dkd), not "
                   f"{', '.join(feature_terms)}: the quantized graph has no feature "
                   "taps; set quant.distill=false or keep logit terms")


def quantize(model, quant, datamodule, finetune):
    from lepton_exp.quant import pt2e

    prepared = pt2e.prepare_qat(model, datamodule.example_batch(2), quant.skip)
    finetune(prepared, lr=quant.lr, epochs=quant.epochs, distill=quant.distill,
             directory=DIRECTORY)
    quantized = pt2e.convert(prepared)
    return quantized, pt2e.layer_coverage(quantized, quant.skip)
