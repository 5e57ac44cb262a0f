"""Embedding-output transfer (TinyBERT's embedding-layer loss): the hidden-state loss on the
embedding outputs (tap 0 of both models) through its own learned projection."""

from __future__ import annotations

from lepton_exp.distill.methods.hidden import Term as HiddenTerm

EMBEDDINGS = {"student": [0], "teacher": [0]}


class Term(HiddenTerm):
    name = "embedding"
    fixed_layers = True  # distill.layers does not apply to it

    def __init__(self):
        super().__init__(layers=EMBEDDINGS)
