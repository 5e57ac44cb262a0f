"""What a model really is, measured: sparsity, parameters, bytes, MACs, latency -- for
pruned, quantized and dense models alike (one place, used by the prune and quant steps).

Nothing here reads the requested ratio: every figure comes from the tensors or from timing
the model, so a report cannot claim a compression that did not happen.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from lepton_exp.models.taps import model_logits, repeat_batch

# The layers whose weights pruning and quantization act on (and sparsity is reported for).
PRUNABLE = (nn.Conv2d, nn.Linear)


def fold_masks(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint taken while pruning masks were attached (``<w>_orig``, ``<w>_mask``)
    as the plain state dict of the masked model (``<w> = <w>_orig * <w>_mask``)."""
    folded = {}
    for name, tensor in state.items():
        base = name.removesuffix("_orig")
        if name.endswith("_orig") and f"{base}_mask" in state:
            folded[base] = tensor * state[f"{base}_mask"]
        elif not (name.endswith("_mask") and f"{name.removesuffix('_mask')}_orig" in state):
            folded[name] = tensor
    return folded


def _bytes(value: Any) -> int:
    if torch.is_tensor(value):  # quantized tensors report 1 byte per qint8 element
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):  # packed Linear parameters: (int8 weight, bias)
        return sum(_bytes(item) for item in value)
    return 0


def state_bytes(model: nn.Module) -> int:
    """Bytes of every tensor in the model's state (weights, biases, scales, zero points)."""
    return sum(_bytes(value) for value in model.state_dict().values())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers as stored in memory (dense)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def zero_fraction(tensors: Iterable[torch.Tensor]) -> float:
    total = zeros = 0
    for tensor in tensors:
        total += tensor.numel()
        zeros += int((tensor == 0).sum())
    return zeros / max(1, total)


def effective_state(model: nn.Module, parameters_only: bool = False) -> dict[str, torch.Tensor]:
    """The tensors the model computes with: a masked ``<w>_orig`` becomes ``<w>`` times its
    mask, and the masks themselves are left out (they are not part of the model)."""
    parameters = dict(model.named_parameters())
    state = fold_masks({name: tensor.detach() for name, tensor in
                        [*parameters.items(), *model.named_buffers()]})
    if parameters_only:
        return {name: tensor for name, tensor in state.items()
                if name in parameters or f"{name}_orig" in parameters}
    return state


def sparsity_report(model: nn.Module) -> dict[str, Any]:
    """Global and per-layer zero fractions of conv/linear weights, and parameter counts."""
    # With masks attached, module.weight is weight_orig * mask: what the model uses.
    weights = {name: module.weight.detach() for name, module in model.named_modules()
               if isinstance(module, PRUNABLE)}
    parameters = effective_state(model, parameters_only=True).values()
    return {"sparsity": zero_fraction(weights.values()),
            "layer_sparsity": {name: round(zero_fraction([w]), 6) for name, w in weights.items()},
            "params": sum(t.numel() for t in parameters),
            "nonzero_params": sum(int((t != 0).sum()) for t in parameters)}


def sparse_tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes of ``tensor`` stored as its non-zero values plus a one-bit-per-element mask
    (bitmap sparse format), or dense when that is smaller."""
    dense = tensor.numel() * tensor.element_size()
    if not tensor.is_floating_point():
        return dense
    bitmap = (tensor.numel() + 7) // 8
    return min(dense, int((tensor != 0).sum()) * tensor.element_size() + bitmap)


def size_bytes(model: nn.Module) -> dict[str, int]:
    """Dense bytes (every parameter and buffer stored) and sparse-stored bytes (each tensor
    in bitmap sparse format when that is smaller: what unstructured sparsity can save)."""
    state = effective_state(model).values()
    return {"dense_bytes": sum(t.numel() * t.element_size() for t in state),
            "sparse_bytes": sum(sparse_tensor_bytes(t) for t in state)}


def count_macs(model: nn.Module, example_inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (torch's FLOP counter, FLOPs / 2). Dense
    kernels: unstructured zeros still cost MACs, removed channels do not."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model_logits(model, example_inputs)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def latencies_ms(models: Sequence[nn.Module], example_inputs: torch.Tensor, repeats: int = 20,
                 warmup: int = 3) -> list[float]:
    """Median wall time of one forward pass of each model, in milliseconds. The models are
    timed in turns (one pass of each per repeat), so load on the machine hits them alike
    and their ratio is fair even when absolute times drift."""
    states = [model.training for model in models]
    for model in models:
        model.eval()
    times: list[list[float]] = [[] for _ in models]
    try:
        with torch.no_grad():
            for index in range(warmup + repeats):
                for model, timings in zip(models, times, strict=True):
                    start = time.perf_counter()
                    model_logits(model, example_inputs)
                    if index >= warmup:
                        timings.append((time.perf_counter() - start) * 1000.0)
    finally:
        for model, training in zip(models, states, strict=True):
            model.train(training)
    return [statistics.median(timings) for timings in times]


def latency_ms(model: nn.Module, example_inputs: torch.Tensor, repeats: int = 20,
               warmup: int = 3) -> float:
    """Median wall time of one forward pass on the current device, in milliseconds."""
    return latencies_ms([model], example_inputs, repeats, warmup)[0]


def latency_report(models: Sequence[nn.Module], example: torch.Tensor,
                   latency_batch: int = 64) -> list[dict[str, float]]:
    """``latency_ms_b1`` and ``latency_ms_b<latency_batch>`` of each model, timed in turns."""
    batch = repeat_batch(example, latency_batch)
    single = latencies_ms(models, example)
    batched = latencies_ms(models, batch, repeats=10, warmup=2)
    return [{"latency_ms_b1": round(one, 4), f"latency_ms_b{latency_batch}": round(many, 4)}
            for one, many in zip(single, batched, strict=True)]


def compression_report(model: nn.Module, example: torch.Tensor, latency_batch: int = 64,
                       latency: bool = True) -> dict[str, Any]:
    """Everything measured about ``model`` at once, as flat ``compress/*``-ready keys.

    ``example`` is one input (batch 1); latency is timed at batch 1 and ``latency_batch``
    (``latency=False`` leaves it to :func:`latency_report`, to time models side by side).
    """
    sparsity = sparsity_report(model)
    report = {
        "sparsity": round(sparsity["sparsity"], 6),
        "params": sparsity["params"],
        "nonzero_params": sparsity["nonzero_params"],
        **size_bytes(model),
        "macs": count_macs(model, example),
    }
    if latency:
        report.update(latency_report([model], example, latency_batch)[0])
    report["layer_sparsity"] = sparsity["layer_sparsity"]
    return report
