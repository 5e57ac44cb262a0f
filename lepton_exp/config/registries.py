"""Every pluggable kind, by name: the package whose modules are its entries (see
``lepton_exp.registry``). Selecting an entry is a Hydra group option whose yaml names it."""

from __future__ import annotations

from lepton_exp.registry import Registry

DATASETS = Registry("data set", "lepton_exp.data.sets", key="data.name")
MODELS = Registry("model family", "lepton_exp.models.families", key="model.name")
DISTILL_METHODS = Registry("distillation method", "lepton_exp.distill.methods",
                           key="distill.terms")
PRUNE_METHODS = Registry("prune method", "lepton_exp.prune.methods", key="prune.method")
QUANT_METHODS = Registry("quant method", "lepton_exp.quant.methods", key="quant.method")
EXPORT_FORMATS = Registry("export format", "lepton_exp.export.formats", key="export.formats")
LOGGERS = Registry("logger", "lepton_exp.tracking.loggers", key="logger.name")
STAGES = Registry("stage", "lepton_exp.stages", key="stage")

NONE = "none"  # the option of the prune and quant groups that does nothing

# Groups whose options each bring their own schema: (registry, config key of the entry name)
SCHEMA_GROUPS = {"data": (DATASETS, "name"), "prune": (PRUNE_METHODS, "method"),
                 "quant": (QUANT_METHODS, "method")}
