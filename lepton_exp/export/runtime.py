"""What every export format shares: the model prepared for export (CPU, eval, pruning masks
folded, text models called positionally), the shapes it accepts, a runtime session as a
module that the test loop and the latency timer take like any model, and the comparison of
its outputs with PyTorch's."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch
from torch import nn

from lepton_exp.errors import LeptonError
from lepton_exp.models.taps import PositionalLogits, model_logits, positional


class ExportError(LeptonError):
    """An export that could not be written, loaded or trusted (one line: what to try)."""


class Unsupported(Exception):
    """A variant a format does not offer for this model (recorded, not an error)."""


@dataclass
class InputSpec:
    """The inputs an exported model takes: names and, per name, its dynamic dimensions
    (batch; text: sequence length too) with their largest sizes."""

    names: tuple[str, ...]
    max_batch: int
    max_length: int = 0  # text: the longest sequence (0: images)
    # an input of the largest shape: ExecuTorch plans its memory from the example's shape,
    # whatever the dynamic dimensions' bounds say (a batch-2 example capped a CNN at 15)
    largest: Any = None

    @property
    def is_text(self) -> bool:
        return self.max_length > 0

    def torch_dynamic_shapes(self) -> tuple:
        """torch.export's ``dynamic_shapes`` for the positional inputs."""
        batch = torch.export.Dim("batch", min=1, max=self.max_batch)
        if not self.is_text:
            return ({0: batch},)
        length = torch.export.Dim("sequence", min=2, max=self.max_length)
        return (tuple({0: batch, 1: length} for _ in self.names),)


def input_spec(datamodule, max_batch: int) -> InputSpec:
    """What the run's model takes: its inputs' names, the batch sizes (and text lengths) the
    exports must accept, and an input of the largest such shape."""
    from lepton_exp.models.taps import repeat_batch

    longest = datamodule.example_batch(1, full_length=True)
    names = tuple(longest) if isinstance(longest, dict) else ("images",)
    return InputSpec(names, max_batch, datamodule.info.max_length,
                     repeat_batch(longest, max_batch))


def exportable(model: nn.Module, example: Any) -> nn.Module:
    """A CPU copy of ``model`` in eval mode taking positional inputs, with any pruning masks
    folded into its weights (a masked layer would export its mask multiplication)."""
    from torch.nn.utils import prune

    def masked(module: nn.Module) -> list[str]:
        return [hook._tensor_name for hook in module._forward_pre_hooks.values()
                if isinstance(hook, prune.BasePruningMethod)]

    # A masked weight is computed (weight_orig * weight_mask), which deepcopy refuses: copied
    # without it, then folded in the copy.
    computed = [(module, name, getattr(module, name)) for module in model.modules()
                for name in masked(module)]
    for module, name, _ in computed:
        delattr(module, name)
    try:
        model = copy.deepcopy(model).cpu().eval()
    finally:
        for module, name, value in computed:
            setattr(module, name, value)
    for module in model.modules():
        for name in masked(module):
            prune.remove(module, name)  # weight = weight_orig * weight_mask, a plain parameter
    if isinstance(example, dict):
        model = PositionalLogits(model, tuple(example)).eval()
    return model


class RuntimeModel(nn.Module):
    """A loaded export as a module: the test loop and the latency timer call it as they call
    a PyTorch model (images; or text as keywords, answering ``.logits``)."""

    def __init__(self, run: Callable[[tuple[torch.Tensor, ...]], torch.Tensor], label: str):
        super().__init__()
        self.run = run
        self.label = label

    def forward(self, *inputs: torch.Tensor, **named: torch.Tensor) -> Any:
        if named:
            return SimpleNamespace(logits=self.run(tuple(named.values())))
        return self.run(tuple(inputs))


def compare(reference: nn.Module, exported: RuntimeModel, batches: list,
            tolerance: float | None, min_agreement: float, what: str) -> dict[str, float]:
    """Max abs logit difference and top-1 agreement of ``exported`` against the PyTorch
    ``reference`` (called as the run calls it: text as keywords) on ``batches``;
    ExportError naming the first diverging output beyond ``tolerance`` (None: int8, judged
    by its top-1 agreement alone)."""
    worst, agree, total = 0.0, 0, 0
    first = None
    with torch.no_grad():
        for index, batch in enumerate(batches):
            inputs = positional(batch)
            expected = model_logits(reference, batch)
            got = exported(*inputs)
            difference = (got.float() - expected.float()).abs()
            per_sample = difference.flatten(1).amax(1)
            worst = max(worst, float(per_sample.max()))
            agree += int((got.argmax(1) == expected.argmax(1)).sum())
            total += len(per_sample)
            if first is None and tolerance is not None and float(per_sample.max()) > tolerance:
                sample = int(per_sample.argmax())
                output = int(difference[sample].argmax())
                first = (f"{what}: output {output} (logit of class {output}) of sample {sample} "
                         f"in test batch {index} differs from PyTorch by "
                         f"{float(per_sample[sample]):.3g} (> export.tolerance={tolerance})")
    agreement = agree / max(total, 1)
    if first is not None:
        raise ExportError(f"{first}: the export is kept for inspection; try another opset "
                          "(export.formats.onnx.opset) or report the model")
    if agreement < min_agreement:
        raise ExportError(f"{what}: top-1 agrees with PyTorch on {agreement:.1%} of the first "
                          f"test samples (< export.min_agreement={min_agreement}): calibrate on "
                          "more batches (export.calibration_batches), train the model further "
                          "(an undertrained model's close logits flip), or accept it with a "
                          "lower export.min_agreement")
    return {"max_abs_diff": worst, "top1_agreement": agreement, "compared": total}


def write_inputs_file(directory: Path, spec: dict[str, Any]) -> Path:
    """``inputs.json`` beside the exports: what a caller must feed them (normalisation,
    size, channel order, class names; text: the tokenizer files' folder and length)."""
    from lepton_exp.tracking.record import write_json_atomic

    path = directory / "inputs.json"
    write_json_atomic(path, spec)
    return path

