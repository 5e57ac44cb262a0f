"""Which layers of a quantized model run int8, and which stayed float (and why)."""

from __future__ import annotations

from typing import Any


def coverage_summary(layers: dict[str, dict[str, str]]) -> dict[str, Any]:
    int8 = [name for name, layer in layers.items() if layer["runs"] == "int8"]
    fallback = {name: layer for name, layer in layers.items() if layer["runs"] != "int8"}
    return {"int8_layers": len(int8), "float_layers": len(fallback), "fallback": fallback}
