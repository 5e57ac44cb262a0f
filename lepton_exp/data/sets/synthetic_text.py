"""Generated sentences: filler words plus class words (``c1w3``: class 1's word 3), the label
being the class whose words appear. A word-level tokenizer over exactly this vocabulary is
built in memory, so nothing is read or downloaded: tests and smoke runs of the text path."""

from __future__ import annotations

import json
from dataclasses import dataclass

from lepton_exp.config.checks import check_range, text_data_checks
from lepton_exp.config.schemas import TextDataConfig

FILLER = 40  # filler words w0 ... w39


@dataclass
class Schema(TextDataConfig):
    num_classes: int = 2
    num_samples: int = 512
    min_words: int = 4
    max_words: int = 16
    test_size: float = 0.2


def check(cfg):
    data = cfg.data
    yield check_range("data.test_size", data.test_size, 0, 1, low_open=True)
    yield from text_data_checks(cfg)
    yield check_range("data.num_samples", data.num_samples, 1)
    yield check_range("data.num_classes", data.num_classes, 2)
    yield check_range("data.min_words", data.min_words, 1)
    yield check_range("data.max_words", data.max_words, data.min_words or 1)


def build(cfg):
    from lepton_exp.data.text import TextClassificationData

    return TextClassificationData(cfg, num_classes=cfg.num_classes, sentences=sentences,
                                  fingerprint=fingerprint, tokenizer=tokenizer)


def _vocabulary(cfg) -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    classes = [f"c{label}w{k}" for label in range(cfg.num_classes) for k in range(4)]
    return specials + classes + [f"w{k}" for k in range(FILLER)]


def tokenizer(cfg):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate(_vocabulary(cfg))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]",
                                   unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                   mask_token="[MASK]", name_or_path="synthetic-word-level")


def fingerprint(cfg) -> str:
    return json.dumps({k: cfg[k] for k in ("num_samples", "num_classes", "split_seed",
                                           "min_words", "max_words")})


def sentences(cfg) -> dict[str, tuple[list[str], list[int]]]:
    import numpy as np

    rng = np.random.default_rng(cfg.split_seed)
    texts, labels = [], []
    for index in range(cfg.num_samples):
        label = index % cfg.num_classes
        length = int(rng.integers(cfg.min_words, cfg.max_words + 1))
        words = [f"w{k}" for k in rng.integers(0, FILLER, length)]
        for position in rng.choice(length, size=min(3, length), replace=False):
            words[position] = f"c{label}w{rng.integers(0, 4)}"
        texts.append(" ".join(words))
        labels.append(label)
    return {"train": (texts, labels)}
