"""No quantization: the run's model stays float32 (the quant step does not run)."""

from __future__ import annotations

from lepton_exp.config.schemas import QuantConfig as Schema  # noqa: F401 - the entry's schema
