"""What the structured methods share (channels for CNNs; heads, FFN neurons for transformers).
Not an entry: its name starts with an underscore."""

from __future__ import annotations

from lepton_exp.config.schemas import is_text_data


def for_transformers(cfg) -> str | None:
    if is_text_data(cfg) is not False:
        return None
    return (f"prune={cfg.prune.method} is for transformers: prune CNNs structurally with "
            "prune=channel")


def remaining_share(target: float, previous: float) -> float:
    """The share of the *remaining* channels, heads or neurons a round removes to go from
    ``previous`` to ``target`` (of the original count)."""
    return (target - previous) / (1.0 - previous)
