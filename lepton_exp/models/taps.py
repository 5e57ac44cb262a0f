"""Taps: named intermediate outputs of any model, the one interface distillation losses see.

A :class:`Tapper` runs a model once and returns :class:`Taps`: the logits, the feature list
(CNN stage outputs, or a transformer's hidden states) and, for transformers, attention
probabilities and pre-softmax scores. Losses index ``taps.features[i]`` and never learn
which library (timm, the CIFAR ResNets, transformers) built the model.

- timm models (the CIFAR ResNets included) declare their stages in ``feature_info`` (what
  ``features_only`` uses); forward hooks on those modules capture them during the normal
  forward, so the logits and the features come from one pass. Index 0 is the stem.
  ``embedding`` is the classifier's input (the pooled, pre-logit vector); ``preact`` the stage
  outputs before their final ReLU, where ``feature_info`` names the ReLU (``preact_module``:
  the module whose input it is; RepDistiller's ``preact=True``), else the stage outputs.
- transformers models return ``hidden_states`` (index 0 = embedding output) and, with
  eager attention, ``attentions``; pre-softmax scores are rebuilt from hooked query/key
  projections (transformers does not return them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from lepton_exp.errors import ConfigError


@dataclass
class Taps:
    logits: torch.Tensor
    features: list[Optional[torch.Tensor]] = field(default_factory=list)
    attentions: list[torch.Tensor] = field(default_factory=list)  # N x heads x L x L
    scores: list[torch.Tensor] = field(default_factory=list)  # pre-softmax, same shape
    attention_mask: Optional[torch.Tensor] = None  # N x L (text inputs), 1 = real token
    embedding: Optional[torch.Tensor] = None  # N x D: the classifier's input
    preact: list[Optional[torch.Tensor]] = field(default_factory=list)  # like features


def model_logits(model: nn.Module, inputs: Any) -> torch.Tensor:
    """Logits of any classifier: timm models take a tensor, transformers models a dict of
    tensors (input_ids, attention_mask) and return an output object."""
    if isinstance(inputs, dict):
        return model(**inputs).logits
    return model(inputs)


class PositionalLogits(nn.Module):
    """Logits from positional inputs, whichever library built the model (a transformers
    model takes keywords and returns an output object)."""

    def __init__(self, model: nn.Module, input_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, inputs, strict=True))).logits


def positional(inputs: Any) -> tuple[torch.Tensor, ...]:
    return tuple(inputs.values()) if isinstance(inputs, dict) else (inputs,)


def repeat_batch(inputs: Any, size: int) -> Any:
    """A batch of ``size`` copies of a one-sample batch (tensor or dict of tensors)."""
    if isinstance(inputs, dict):
        return {key: value.expand(size, *value.shape[1:]).contiguous()
                for key, value in inputs.items()}
    return inputs.expand(size, *inputs.shape[1:]).contiguous()


def is_transformers_model(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return config is not None and hasattr(config, "num_hidden_layers")


def feature_entries(model: nn.Module) -> list[dict]:
    """The model's feature taps as timm ``feature_info`` declares them: ``module`` (whose
    output is the tap), ``num_chs``, ``reduction`` and, where declared, ``preact_module``
    and ``bn_before_relu``."""
    info = getattr(model, "feature_info", None)
    if info is None:
        raise ConfigError(f"{type(model).__name__} declares no feature stages (timm feature_info):"
                          " use logit-only distillation terms (kd, dkd) for this model")
    return list(info.info if hasattr(info, "info") else info)  # timm FeatureInfo or a list


def classifier_module(model: nn.Module) -> nn.Module:
    """The final classifier, whose input is the model's embedding (timm ``get_classifier``,
    transformers' ``classifier``)."""
    classifier = (model.get_classifier() if hasattr(model, "get_classifier")
                  else getattr(model, "classifier", None))
    if not isinstance(classifier, nn.Module) or isinstance(classifier, nn.Identity):
        raise ConfigError(f"{type(model).__name__} has no classifier layer whose input could "
                          "serve as its embedding: use terms on logits or feature maps")
    return classifier


class Tapper:
    """Runs ``model`` and collects its taps. Not an ``nn.Module`` on purpose: it must not
    re-register the model's parameters under a second name."""

    def __init__(self, model: nn.Module, *, features: bool = True, attentions: bool = False,
                 scores: bool = False, embedding: bool = False, preact: bool = False):
        self.model = model
        self.transformer = is_transformers_model(model)
        self.want_features = features or preact
        self.want_attentions = attentions
        self.want_scores = scores
        self.want_embedding = embedding
        self.want_preact = preact
        self._active = False
        self._captured: dict[Any, torch.Tensor] = {}
        self._handles: list = []
        self._feature_count = 0
        if self.transformer:
            if scores:
                self._hook_query_key()
        elif self.want_features:
            entries = feature_entries(model)
            self._feature_count = len(entries)
            for index, entry in enumerate(entries):
                module = model.get_submodule(entry["module"])
                self._handles.append(module.register_forward_hook(self._store(index)))
                if preact and entry.get("preact_module"):
                    relu = model.get_submodule(entry["preact_module"])
                    self._handles.append(relu.register_forward_pre_hook(
                        self._store_input(("preact", index))))
        if embedding:
            classifier = classifier_module(model)
            self._handles.append(classifier.register_forward_pre_hook(
                self._store_input("embedding", copy=False)))

    def _store(self, key):
        def hook(module, inputs, output):
            if self._active:
                self._captured[key] = output
        return hook

    def _store_input(self, key, copy: bool = True):
        def hook(module, inputs):
            if self._active:
                # a copy: the ReLU that reads it may work in place
                self._captured[key] = inputs[0].clone() if copy else inputs[0]
        return hook

    def _hook_query_key(self) -> None:
        layers = _attention_layers(self.model)
        for index, attention in enumerate(layers):
            self._handles.append(attention.query.register_forward_hook(self._store(("q", index))))
            self._handles.append(attention.key.register_forward_hook(self._store(("k", index))))

    def __call__(self, inputs: Any) -> Taps:
        self._captured = {}
        self._active = True
        try:
            if self.transformer:
                return self._transformer_taps(inputs)
            logits = self.model(inputs)
            features = [self._captured.get(index) for index in range(self._feature_count)]
            taps = Taps(logits=logits, features=features,
                        embedding=self._captured.get("embedding"))
            if self.want_preact:
                taps.preact = [self._captured.get(("preact", index), feature)
                               for index, feature in enumerate(features)]
            return taps
        finally:
            self._active = False
            self._captured = {}

    def _transformer_taps(self, inputs: dict) -> Taps:
        inputs = dict(inputs)
        inputs.pop("labels", None)
        outputs = self.model(**inputs, output_hidden_states=self.want_features,
                             output_attentions=self.want_attentions, return_dict=True)
        mask = inputs.get("attention_mask")
        taps = Taps(logits=outputs.logits, attention_mask=mask,
                    embedding=self._captured.get("embedding"))
        if self.want_features:
            taps.features = list(outputs.hidden_states)
        if self.want_attentions:
            if outputs.attentions is None or any(a is None for a in outputs.attentions):
                raise ConfigError("the transformer returned no attention maps: build it with "
                                  "attn_implementation='eager'")
            taps.attentions = list(outputs.attentions)
        if self.want_scores:
            taps.scores = self._scores(mask)
        return taps

    def _scores(self, mask: Optional[torch.Tensor]) -> list[torch.Tensor]:
        scores = []
        for index, attention in enumerate(_attention_layers(self.model)):
            query, key = self._captured[("q", index)], self._captured[("k", index)]
            batch, length, width = query.shape
            # Per layer: head pruning leaves layers with different head counts.
            head_dim = getattr(attention, "attention_head_size",
                               width // self.model.config.num_attention_heads)
            heads = width // head_dim
            query = query.view(batch, length, heads, head_dim).transpose(1, 2)
            key = key.view(batch, length, heads, head_dim).transpose(1, 2)
            layer_scores = query @ key.transpose(-1, -2) / math.sqrt(head_dim)
            if mask is not None:  # padded keys carry no information: zero them (TinyBERT)
                layer_scores = layer_scores.masked_fill(mask[:, None, None, :] == 0, 0.0)
            scores.append(layer_scores)
        return scores

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _attention_layers(model: nn.Module) -> list[nn.Module]:
    """The self-attention modules (with ``query``/``key`` projections) in layer order."""
    layers = [module for module in model.modules()
              if isinstance(getattr(module, "query", None), nn.Linear)
              and isinstance(getattr(module, "key", None), nn.Linear)]
    if len(layers) != model.config.num_hidden_layers:
        raise ConfigError(f"cannot find the query/key projections of {type(model).__name__}: "
                          "attention scores are supported for BERT-style encoders")
    return layers
