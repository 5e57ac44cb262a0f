"""Structured pruning of BERT-style transformers: whole attention heads and FFN neurons.

Importance is weight magnitude: a head's L1 norm over its query/key/value rows and its
columns of the attention output projection; an FFN neuron's over its row of the
intermediate projection and its column of the output projection. The least important are
removed with transformers' ``prune_linear_layer`` (what its former ``prune_heads`` used),
so the model becomes genuinely smaller. Every layer keeps at least one head and neuron.
"""

from __future__ import annotations

import torch
from torch import nn

from lepton_exp.errors import ConfigError


def _layers(model: nn.Module) -> list[nn.Module]:
    """The encoder layers (modules with attention.self.{query,key,value} and intermediate)."""
    layers = [module for module in model.modules()
              if hasattr(module, "attention") and hasattr(module, "intermediate")
              and hasattr(getattr(module.attention, "self", None), "query")]
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no BERT-style encoder layers: "
                          "head and FFN pruning need one (use prune=magnitude)")
    return layers


def _removed(importance: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices to keep after removing round(fraction * n) of the least important (>= 1 kept)."""
    count = min(round(fraction * len(importance)), len(importance) - 1)
    order = torch.argsort(importance, descending=True)
    return torch.sort(order[:len(importance) - count]).values


def head_importance(layer: nn.Module) -> torch.Tensor:
    attention = layer.attention.self
    size = attention.attention_head_size
    heads = attention.query.out_features // size
    rows = sum(getattr(attention, name).weight.detach().abs().view(heads, size, -1).sum((1, 2))
               for name in ("query", "key", "value"))
    columns = layer.attention.output.dense.weight.detach().abs().view(-1, heads, size).sum((0, 2))
    return rows + columns


def prune_heads(model: nn.Module, fraction: float) -> nn.Module:
    """Remove ``fraction`` of each layer's attention heads (in place); returns the model."""
    from transformers.pytorch_utils import prune_linear_layer

    for layer in _layers(model):
        attention = layer.attention.self
        size = attention.attention_head_size
        kept_heads = _removed(head_importance(layer), fraction)
        index = (kept_heads[:, None] * size + torch.arange(size)).flatten()
        for name in ("query", "key", "value"):
            setattr(attention, name, prune_linear_layer(getattr(attention, name), index, dim=0))
        output = layer.attention.output
        output.dense = prune_linear_layer(output.dense, index, dim=1)
        attention.num_attention_heads = len(kept_heads)
        attention.all_head_size = len(kept_heads) * size
    return model


def prune_ffn(model: nn.Module, fraction: float) -> nn.Module:
    """Remove ``fraction`` of each layer's FFN neurons (in place); returns the model."""
    from transformers.pytorch_utils import prune_linear_layer

    for layer in _layers(model):
        inner, outer = layer.intermediate.dense, layer.output.dense
        importance = (inner.weight.detach().abs().sum(1) + inner.bias.detach().abs()
                      + outer.weight.detach().abs().sum(0))
        index = _removed(importance, fraction)
        layer.intermediate.dense = prune_linear_layer(inner, index, dim=0)
        layer.output.dense = prune_linear_layer(outer, index, dim=1)
    return model


def sync_head_counts(model: nn.Module) -> None:
    """After rebuilding a pruned model's shapes: each attention's head count from its width."""
    for layer in _layers(model):
        attention = layer.attention.self
        attention.all_head_size = attention.query.out_features
        attention.num_attention_heads = attention.all_head_size // attention.attention_head_size
