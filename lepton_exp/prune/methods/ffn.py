"""Structured FFN-neuron pruning of BERT-style transformers."""

from __future__ import annotations

from lepton_exp.config.schemas import PruneConfig as Schema  # noqa: F401 - the entry's schema
from lepton_exp.prune.methods._structured import for_transformers, remaining_share


def check(cfg):
    yield for_transformers(cfg)


def prune(model, layers, cfg, target: float, previous: float, example) -> None:
    from lepton_exp.prune.heads import prune_ffn

    prune_ffn(model, remaining_share(target, previous))
