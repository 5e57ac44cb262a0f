"""Structured (filter/channel) pruning with torch-pruning: its dependency graph keeps
residual additions, depthwise convolutions and BN layers consistent, and the result is a
genuinely smaller dense model (fewer channels), not a masked one."""

from __future__ import annotations

import torch
from torch import nn

from lepton_exp.errors import ConfigError, one_line

IMPORTANCES = ("l1", "l2", "bn")


def _importance(name: str):
    import torch_pruning as tp

    if name == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.MagnitudeImportance(p=2)
    if name == "bn":  # the BN scale factors of each channel (network slimming)
        return tp.importance.BNScaleImportance()
    raise ConfigError(f"prune.importance={name} is not one of {', '.join(IMPORTANCES)}")


def prune_channels(model: nn.Module, example_inputs: torch.Tensor, sparsity: float,
                   importance: str = "l1", ignored: list[nn.Module] | None = None,
                   global_pruning: bool = False) -> nn.Module:
    """Remove ``sparsity`` of the output channels of every prunable layer (in place) and
    return the model. Layers in ``ignored`` keep their outputs (e.g. the classifier)."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    try:
        pruner = tp.pruner.MetaPruner(
            model, example_inputs, importance=_importance(importance),
            pruning_ratio=sparsity, ignored_layers=list(ignored or []),
            global_pruning=global_pruning)
        pruner.step()
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - graph tracing of an unsupported model
        raise ConfigError(f"structured pruning failed for {type(model).__name__}: "
                          f"{one_line(error)[:200]}: try prune=magnitude") from error
    finally:
        model.train(was_training)
    return model
