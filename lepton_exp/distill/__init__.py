"""Distillation: loss functions usable on plain tensors, and the terms the distill stage wires.

    from lepton_exp.distill import kd_loss, dkd_loss, attention_transfer_loss, hint_loss

Imports are lazy so that listing the methods (config validation) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "kd_loss": "lepton_exp.distill.methods.kd",
    "hard_target_loss": "lepton_exp.distill.methods.kd",
    "soft_targets": "lepton_exp.distill.methods.kd",
    "dkd_loss": "lepton_exp.distill.methods.dkd",
    "attention_transfer_loss": "lepton_exp.distill.methods.at",
    "attention_map": "lepton_exp.distill.methods.at",
    "hint_loss": "lepton_exp.distill.methods.fitnet",
    "ofd_loss": "lepton_exp.distill.methods.ofd",
    "hcl_loss": "lepton_exp.distill.methods.reviewkd",
    "sp_loss": "lepton_exp.distill.methods.sp",
    "pkt_loss": "lepton_exp.distill.methods.pkt",
    "rkd_loss": "lepton_exp.distill.methods.rkd",
    "nst_loss": "lepton_exp.distill.methods.nst",
    "cc_loss": "lepton_exp.distill.methods.cc",
    "vid_loss": "lepton_exp.distill.methods.vid",
    "dist_loss": "lepton_exp.distill.methods.dist",
    "ab_loss": "lepton_exp.distill.methods.ab",
    "fsp_loss": "lepton_exp.distill.methods.fsp",
    "ft_loss": "lepton_exp.distill.methods.ft",
    "crd_nce_loss": "lepton_exp.distill.methods.crd",
    "DistillationObjective": "lepton_exp.distill.objective",
    "build_objective": "lepton_exp.distill.objective",
    "DistillTerm": "lepton_exp.distill.base",
    "method_names": "lepton_exp.distill.registry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lepton_exp.distill' has no attribute '{name}'")
