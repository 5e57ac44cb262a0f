"""Quantized models as files that reload and run with torch alone (no lepton_exp, no
training code): a torch.export program (``.pt2``) for int8 graphs, TorchScript (``.pt``)
for dynamically quantized eager models.

Reload: ``torch.export.load(path).module()`` (after ``import torchao`` for its int8 ops) or
``torch.jit.load(path)``; both take the model's inputs positionally: images, or
``input_ids, attention_mask``. :func:`load_quantized` does either.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lepton_exp.models.taps import PositionalLogits, positional
from lepton_exp.quant.pt2e import MAX_BATCH
from lepton_exp.tracking.record import publish


def export_path(stem: Path, model: nn.Module) -> Path:
    """Where :func:`export_quantized` writes ``model``: the suffix says the format."""
    return stem.with_suffix(".pt2" if isinstance(model, torch.fx.GraphModule) else ".pt")


def export_quantized(model: nn.Module, example: Any, path: Path) -> Path:
    """Write ``model`` (an int8 graph, or an eager model) for ``example``-like inputs of any
    batch size; returns the file written (suffix chosen by the format)."""
    path = export_path(path, model)
    partial = path.with_name(f".partial-{path.name}")  # renamed once complete
    if isinstance(model, torch.fx.GraphModule):
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(partial))
        return publish(partial, path)
    if isinstance(example, dict):
        model = PositionalLogits(model, tuple(example))
    # TorchScript: torch.export cannot capture fbgemm's packed int8 Linear weights. Tracing
    # is exact here: BERT's only data-dependent branches depend on shapes that attention
    # masks always satisfy (tests/test_quant.py checks other batch and sequence lengths).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on those branches; jit deprecation
        with torch.no_grad():
            traced = torch.jit.trace(model.eval(), positional(example), strict=False,
                                     check_trace=False)
        torch.jit.save(traced, str(partial))
    return publish(partial, path)


def load_quantized(path: Path | str) -> nn.Module:
    """The model written by :func:`export_quantized`, called with positional inputs."""
    path = Path(path)
    if path.suffix == ".pt2":
        from lepton_exp.quant.pt2e import _imports

        pt2e, _, _ = _imports()  # torchao registers the int8 graph's ops
        module = torch.export.load(str(path)).module()
        pt2e.allow_exported_model_train_eval(module)  # .eval() works as on any module
        return module
    with warnings.catch_warnings():  # "torch.jit.load is deprecated": not for this use
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path))
