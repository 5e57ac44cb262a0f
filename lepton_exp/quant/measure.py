"""What a quantized model holds, measured from its tensors."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _bytes(value: Any) -> int:
    if torch.is_tensor(value):  # quantized tensors report 1 byte per qint8 element
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):  # packed Linear parameters: (int8 weight, bias)
        return sum(_bytes(item) for item in value)
    return 0


def state_bytes(model: nn.Module) -> int:
    """Bytes of every tensor in the model's state (weights, biases, scales, zero points)."""
    return sum(_bytes(value) for value in model.state_dict().values())


def coverage_summary(layers: dict[str, dict[str, str]]) -> dict[str, Any]:
    int8 = [name for name, layer in layers.items() if layer["runs"] == "int8"]
    fallback = {name: layer for name, layer in layers.items() if layer["runs"] != "int8"}
    return {"int8_layers": len(int8), "float_layers": len(fallback), "fallback": fallback}
