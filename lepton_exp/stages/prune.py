"""Prune stage: a trained (dense) model is pruned, finetuned — with any ``distill`` terms, from
the teacher or from the dense model itself — and evaluated before pruning (``test_dense/*``),
right after pruning (``test_pruned/*``; not for gradual pruning, which prunes while
finetuning) and after finetuning (``test/*``, ``test_best/*``).

The pruning itself is plain functions in lepton_exp.prune; finetuning is the distillation
module (plain cross-entropy without terms). What the run obtained is measured on the final
model, never derived from the requested ratio: ``compress/*`` (after) beside
``compress_dense/*`` (before) in the record's metrics and W&B summary, per-layer sparsity in
the record's ``compression`` block. The export is a pruned-model safetensors file that
:func:`lepton_exp.prune.export.load_pruned` rebuilds without the pruning code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

from lepton_exp.config.checks import finetune_epochs
from lepton_exp.config.registries import NONE, PRUNE_METHODS
from lepton_exp.stages import Stage, StageContext, StageOutput, TrainRun


class PruneStage(Stage):
    prunes = True

    def check(self, cfg) -> Iterable[Optional[str]]:
        prune = cfg.prune
        if prune.method == NONE:
            methods = [name for name in PRUNE_METHODS.names() if name != NONE]
            yield (f"stage=prune needs a prune method: add prune=<method>, one of "
                   f"{', '.join(methods)}")
        if cfg.distill.student_init != "scratch":
            yield ("distill.student_init applies to stage=distill: stage=prune starts from "
                   "prune.dense (drop distill.student_init)")
        from lepton_exp.training.phases import configured_phases

        phased = list(configured_phases(cfg))
        if phased:
            yield (f"distill.terms.{phased[0]}.init_epochs: an initialisation phase applies to "
                   f"stage=distill; to finetune with {phased[0]}'s loss, set "
                   f"distill.terms.{phased[0]}.init_epochs=0")
        if prune.rounds > finetune_epochs(cfg):
            yield (f"prune.rounds={prune.rounds} is more than the {finetune_epochs(cfg)} "
                   "finetuning epochs (prune.finetune_epochs, else trainer.max_epochs): every "
                   "round finetunes at least one epoch")

    def run_name(self, model: str, data: str, method: str, prune: str, sparsity: Any) -> str:
        finetune = f"+{method}" if method != "none" else ""
        return f"prune-{prune}{sparsity}{finetune}-{model}-{data}"

    def prepare(self, cfg, datamodule, train: TrainRun, run_dir=None):
        from lepton_exp.training.prune import prepare

        return prepare(cfg, datamodule, train)

    def run(self, ctx: StageContext) -> StageOutput:
        from lepton_exp.training.prune import prune_and_finetune

        return prune_and_finetune(ctx)

    def table_row(self, cfg) -> dict[str, Any]:
        return {"prune": f"{cfg.prune.method} {cfg.prune.sparsity:g}"}

    def resume_point(self, cfg, run_dir: Path) -> Optional[Path]:
        from lepton_exp.training.prune import resume_point

        return super().resume_point(cfg, run_dir) or resume_point(run_dir)


ARTEFACTS = ("round*",)  # the rounds before the last (lepton_exp.training.prune)

STAGE = PruneStage()
