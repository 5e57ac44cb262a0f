"""No pruning (teacher and distill runs); stage=prune asks for another method."""

from __future__ import annotations

from lepton_exp.config.schemas import PruneConfig as Schema  # noqa: F401 - the entry's schema
