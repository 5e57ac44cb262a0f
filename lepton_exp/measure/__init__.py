"""What a model really is, measured: sparsity, parameters, bytes, MACs, latency -- for
pruned, quantized and dense models alike (one place, used by the prune and quant steps).

Nothing here reads the requested ratio: every figure comes from the tensors or from timing
the model, so a report cannot claim a compression that did not happen. A timing says how
contended the cores were while it ran (``latency_busy``): other processes competing for
them inflate a latency, and the record must not pass that off as the model's.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from lepton_exp.models.taps import model_logits, repeat_batch
from lepton_exp.processes import (cpu_ticks, load_average, machine_cores, others_cpu_seconds,
                                  ticks_per_second)

log = logging.getLogger(__name__)

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


# A timing is "busy" when other processes (or the hypervisor's other guests) kept, on average,
# more cores busy than this one's threads left free, plus this margin: their work then
# competed with the timed passes for a core. (Not this process's own waiting: a runtime's
# thread pool waking for each short pass waits a lot on an idle machine.)
BUSY_OTHER_CORES = 0.25
# ... and only once others used at least this many clock ticks in all: the kernel counts CPU
# time in ticks (10 ms), so over a short timing (~50 ms) one or two ticks of another
# process waking (the run's own W&B service) would read as 0.2-0.4 cores.
BUSY_MIN_OTHER_TICKS = 5
# Without the kernel's CPU accounting (not Linux): busy when the load average exceeds the
# machine's cores by this much (more tasks want a core than there are cores).
BUSY_LOAD_MARGIN = 0.5


@dataclass
class Timing:
    """Forward passes of some models timed in turns, and how contended the cores were."""

    samples_ms: list[list[float]]  # per model: the wall time of each timed repeat
    warmup: int
    threads: int  # torch's intra-op threads while timing
    load_before: float | None  # the machine's 1-minute load average before the passes
    load_after: float | None  # ... and after them
    other_cpu_s: float | None  # CPU seconds other processes used while the passes ran
    wall_s: float  # how long the timed passes took

    def medians(self) -> list[float]:
        return [statistics.median(samples) for samples in self.samples_ms]

    def spread(self, index: int) -> dict[str, float | int]:
        """Median, min and max of model ``index``'s repeats (ms), and how many."""
        samples = self.samples_ms[index]
        return {"median": round(statistics.median(samples), 4), "min": round(min(samples), 4),
                "max": round(max(samples), 4), "repeats": len(samples), "warmup": self.warmup}


def time_in_turns(models: Sequence[nn.Module], example_inputs: torch.Tensor,
                  repeats: int = 20, warmup: int = 3) -> Timing:
    """Wall time of one forward pass of each model, ``warmup`` untimed passes and then
    ``repeats`` timed ones. The models are timed in turns (one pass of each per repeat), so
    load on the machine hits them alike and their ratio is fair even when absolute times
    drift; the load average and the CPU time other processes used around the timed passes
    say whether that load was there (:func:`contention`)."""
    states = [model.training for model in models]
    for model in models:
        model.eval()
    samples: list[list[float]] = [[] for _ in models]
    try:
        with torch.no_grad():
            for _ in range(warmup):
                for model in models:
                    model_logits(model, example_inputs)
            load_before, ticks_before, started = load_average(), cpu_ticks(), time.perf_counter()
            for _ in range(repeats):
                for model, timings in zip(models, samples, strict=True):
                    start = time.perf_counter()
                    model_logits(model, example_inputs)
                    timings.append((time.perf_counter() - start) * 1000.0)
            wall_s = time.perf_counter() - started
            other_cpu_s = others_cpu_seconds(ticks_before, cpu_ticks())
    finally:
        for model, training in zip(models, states, strict=True):
            model.train(training)
    return Timing(samples, warmup, torch.get_num_threads(), load_before, load_average(),
                  other_cpu_s, wall_s)


def contention(timings: Sequence[Timing]) -> dict[str, Any]:
    """How contended the cores were over ``timings`` (taken one after the other): the load
    average before and after, how many cores other processes kept busy on average
    (``other_cores``), and ``busy``: more than the cores this process's threads left free,
    + BUSY_OTHER_CORES, over at least BUSY_MIN_OTHER_TICKS of their CPU time (where the
    kernel keeps no CPU accounting, the load average above the machine's cores +
    BUSY_LOAD_MARGIN)."""
    threads = timings[0].threads
    measured = [timing for timing in timings if timing.other_cpu_s is not None]
    wall_s = sum(timing.wall_s for timing in measured)
    other_cpu_s = sum(timing.other_cpu_s for timing in measured)
    other_cores = other_cpu_s / wall_s if measured and wall_s > 0 else None
    loads = [load for t in timings for load in (t.load_before, t.load_after) if load is not None]
    if other_cores is not None:
        busy = (other_cores > max(0, machine_cores() - threads) + BUSY_OTHER_CORES
                and other_cpu_s >= BUSY_MIN_OTHER_TICKS / ticks_per_second())
    else:
        busy = bool(loads) and max(loads) > machine_cores() + BUSY_LOAD_MARGIN
    return {"threads": threads, "load_before": timings[0].load_before,
            "load_after": timings[-1].load_after,
            "other_cores": None if other_cores is None else round(other_cores, 3),
            "busy": busy}


def warn_if_busy(conditions: dict[str, Any]) -> None:
    """One warning line when a timing was taken on a busy machine (see :func:`contention`)."""
    if not conditions["busy"]:
        return
    others = conditions["other_cores"]
    competing = ("" if others is None else
                 f"other processes kept {others:.1f} cores busy meanwhile, ")
    fewer = ", or with fewer threads (threads=1)" if conditions["threads"] > 1 else ""
    log.warning("latency timed on a busy machine (%sload average %s -> %s on %d cores, "
                "threads=%d): the recorded latencies are inflated and marked latency_busy; "
                "time again on an idle machine%s", competing, conditions["load_before"],
                conditions["load_after"], machine_cores(), conditions["threads"], fewer)


def latencies_ms(models: Sequence[nn.Module], example_inputs: torch.Tensor, repeats: int = 20,
                 warmup: int = 3) -> list[float]:
    """Median wall time of one forward pass of each model, in milliseconds, timed in turns
    (:func:`time_in_turns`); a warning line when the machine was busy meanwhile."""
    timing = time_in_turns(models, example_inputs, repeats, warmup)
    warn_if_busy(contention([timing]))
    return timing.medians()


def latency_ms(model: nn.Module, example_inputs: torch.Tensor, repeats: int = 20,
               warmup: int = 3) -> float:
    """Median wall time of one forward pass on the current device, in milliseconds."""
    return latencies_ms([model], example_inputs, repeats, warmup)[0]


def latency_report(models: Sequence[nn.Module], example: torch.Tensor,
                   latency_batch: int = 64,
                   models_at: Callable[[torch.Tensor], Sequence[nn.Module]] | None = None
                   ) -> list[dict[str, Any]]:
    """Per model: ``latency_ms_b1`` and ``latency_ms_b<latency_batch>`` (medians of the
    repeats, the models timed in turns), ``latency_busy`` and, under ``latency``, each
    batch size's spread and the conditions (:func:`contention`). ``models_at(inputs)``
    gives the models to time at an input shape when they depend on it (a graph lowered for
    one shape); else ``models``."""
    timings = {}
    for size, repeats, warmup in ((1, 20, 3), (latency_batch, 10, 2)):
        inputs = repeat_batch(example, size)
        timed = models_at(inputs) if models_at else models
        timings[f"b{size}"] = time_in_turns(timed, inputs, repeats, warmup)
    conditions = contention(list(timings.values()))
    warn_if_busy(conditions)
    return [{**{f"latency_ms_{batch}": timing.spread(index)["median"]
                for batch, timing in timings.items()},
             "latency_busy": conditions["busy"],
             "latency": {**{batch: timing.spread(index) for batch, timing in timings.items()},
                         **conditions}}
            for index in range(len(models))]


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
