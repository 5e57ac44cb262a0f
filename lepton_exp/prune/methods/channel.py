"""Structured channel pruning of CNNs with torch-pruning: a genuinely smaller dense model."""

from __future__ import annotations

from dataclasses import dataclass

from lepton_exp.config.schemas import PruneConfig, choice, is_text_data
from lepton_exp.prune.methods._structured import remaining_share


@dataclass
class Schema(PruneConfig):
    importance: str = choice("l1", "l2", "bn")  # filter norms, or BN scale factors


def check(cfg):
    if is_text_data(cfg):
        yield ("prune=channel is for CNNs: prune transformers with prune=heads "
               "(attention heads), ffn (FFN neurons), magnitude, random or gradual")


def prune(model, layers, cfg, target: float, previous: float, example) -> None:
    from lepton_exp.measure import PRUNABLE
    from lepton_exp.prune.channel import prune_channels
    from lepton_exp.prune.targets import first_and_last

    # Skipped layers keep their channels; the classifier always keeps its outputs (classes).
    kept = [module for name, module in model.named_modules()
            if isinstance(module, PRUNABLE) and name not in layers]
    classifier = dict(model.named_modules())[first_and_last(model)[-1]]
    prune_channels(model, example, remaining_share(target, previous),
                   importance=cfg.prune.importance, ignored=[*kept, classifier],
                   global_pruning=cfg.prune.scope == "global")
