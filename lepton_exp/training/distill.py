"""Distillation training: a student trained against one or more frozen teachers.

The LightningModule only wires things: taps from the adapter, the objective (cross-entropy
plus the configured terms, lepton_exp.distill), the teacher-output cache and the metrics
of :class:`ClassificationModule`, whose validation and test steps it keeps.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from lepton_exp.data.base import DataInfo
from lepton_exp.distill.objective import DistillationObjective, build_objective
from lepton_exp.distill.output_cache import TeacherOutputCache, bytes_per_sample
from lepton_exp.errors import ConfigError
from lepton_exp.models import build_model
from lepton_exp.models.taps import Tapper, Taps
from lepton_exp.models.transfer import init_from_teacher
from lepton_exp.teachers.load import Teacher
from lepton_exp.training import phases
from lepton_exp.training.classify import ClassificationModule
from lepton_exp.training.trainer import Checkpoints, fit_and_test, training_horizon

log = logging.getLogger(__name__)


class FrozenTeacher(nn.Module):
    """A teacher that stays in eval mode (BN statistics untouched, no dropout) and has no
    trainable parameters, whatever ``.train()`` calls Lightning makes on the parent."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)


def _tapper(model: nn.Module, needs: set[str]) -> Tapper:
    return Tapper(model, features="features" in needs, attentions="attentions" in needs,
                  scores="scores" in needs, embedding="embedding" in needs,
                  preact="preact" in needs)


class DistillationModule(ClassificationModule):
    def __init__(self, student: nn.Module, teachers: Sequence[Teacher],
                 objective: DistillationObjective, info: DataInfo, optim_cfg, scheduler_cfg,
                 output_cache: Optional[TeacherOutputCache] = None):
        super().__init__(student, info, optim_cfg, scheduler_cfg)
        self.teachers = nn.ModuleList(FrozenTeacher(t.model) for t in teachers)
        self.teacher_weights = [t.weight for t in teachers]
        self.objective = objective
        self.output_cache = output_cache
        needs = objective.needs
        self.student_tapper = _tapper(student, needs)
        self.teacher_tappers = [_tapper(t.model, needs) for t in teachers]
        self.constant_logs: dict[str, float] = {}  # logged at epoch ends (objective.constant)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            total, steps_per_epoch = training_horizon(self.trainer)
            self.objective.set_horizon(total_steps=total, steps_per_epoch=steps_per_epoch)

    @torch.no_grad()
    def teacher_taps(self, inputs, indices: Optional[torch.Tensor] = None) -> list[Taps]:
        if self.output_cache is None or indices is None:
            return [tapper(inputs) for tapper in self.teacher_tappers]
        # A batch with samples not seen yet goes through the teachers whole, and the new
        # samples' outputs are stored; the cache then serves the whole batch. Whole: in eval
        # mode a sample's outputs do not depend on the rest of the batch, but the float
        # rounding of CPU kernels does depend on the batch size, so a resumed run (whose
        # cache starts empty) stores the values the uninterrupted run stored in epoch 0.
        missing = self.output_cache.missing(indices)
        if missing.any():
            outputs = [tapper(inputs) for tapper in self.teacher_tappers]
            self.output_cache.put(indices, outputs, only=missing)
        return self.output_cache.get(indices)

    def training_step(self, batch, batch_idx):
        inputs, labels = batch[0], batch[1]
        indices = batch[2] if len(batch) > 2 else None
        student = self.student_tapper(inputs)
        teachers = self.teacher_taps(inputs, indices)
        loss, logs = self.objective(student, teachers, labels, self.global_step,
                                    self.teacher_weights, indices)
        logs.pop("loss")
        self.stop_if_not_finite(loss, logs)
        if self.objective.constant:  # weights and temperature: logged once, at epoch ends
            self.constant_logs = {n: v for n, v in logs.items() if not n.startswith("loss_")}
            logs = {n: v for n, v in logs.items() if n.startswith("loss_")}
        self.update_train_metrics(student.logits, labels)
        self.log_train({"loss": loss, **logs}, len(labels))
        return loss

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.constant_logs:
            self.log_dict({f"train/{name}": value for name, value in self.constant_logs.items()},
                          on_step=False, on_epoch=True)

    # Checkpoints leave the frozen teachers out (they are stored once, in the teacher cache
    # or the given checkpoint); loading puts the in-memory ones back, so loading stays strict
    # for everything else.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        kept = OrderedDict((name, tensor) for name, tensor in state.items()
                           if not name.startswith("teachers."))
        # The modules' versions travel too: a loader may read them (pt2e's observers take a
        # state without one for an old format and reset their eps).
        kept._metadata = getattr(state, "_metadata", None)  # type: ignore[attr-defined]
        checkpoint["state_dict"] = kept

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        checkpoint["state_dict"].update(
            {f"teachers.{name}": tensor for name, tensor in self.teachers.state_dict().items()})


def bind_objective(objective: DistillationObjective, student: nn.Module,
                   teachers: Sequence[Teacher], example: torch.Tensor, layers) -> list[Taps]:
    """One dry forward pass (eval mode, no gradients): pair taps, build connectors.
    Returns the teachers' taps, whose sizes size the output cache."""
    needs = objective.needs
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad():
            student_taps = _tapper(student, needs)
            teacher_tappers = [_tapper(t.model.eval(), needs) for t in teachers]
            try:
                student_out = student_taps(example)
                teacher_out = [tapper(example) for tapper in teacher_tappers]
            finally:
                student_taps.remove()
                for tapper in teacher_tappers:
                    tapper.remove()
        objective.bind(student_out, teacher_out[0], layers)
        for term in objective.terms.values():  # terms reading the models themselves (OFD)
            term.bind_models(student, teachers[0].model)
    finally:
        student.train(was_training)
    return teacher_out


def teacher_output_cache(cfg, datamodule, objective: DistillationObjective,
                         teacher_taps: list[Taps]) -> tuple[Optional[TeacherOutputCache], dict]:
    """The cache when it is valid and fits ``distill.teacher_output_cache_gb``, with the reason."""
    wanted = cfg.distill.cache_teacher_outputs
    unsupported = datamodule.no_output_cache_reason
    if wanted and unsupported:
        raise ConfigError(f"distill.cache_teacher_outputs=true is not possible with "
                          f"{unsupported}: leave it null (auto)")
    deterministic = datamodule.deterministic_train_transform
    if wanted and not deterministic:
        raise ConfigError("distill.cache_teacher_outputs=true needs a deterministic training "
                          "transform: set data.augment=false, or leave it null (auto)")
    if wanted is False or not deterministic or unsupported:
        reason = "disabled" if wanted is False else (unsupported or "augmentation")
        return None, {"enabled": False, "reason": reason}
    stored = objective.teacher_taps_read()
    size = bytes_per_sample(teacher_taps, stored) * len(datamodule.train)
    budget = cfg.distill.teacher_output_cache_gb
    if size > budget * 2**30:
        if wanted:
            raise ConfigError(f"teacher outputs need {size / 2**30:.1f} GiB, above "
                              f"distill.teacher_output_cache_gb={budget}: raise it or set "
                              "distill.cache_teacher_outputs=false")
        log.warning("teacher outputs would take %.1f GiB (distill.teacher_output_cache_gb=%s): "
                    "computing them every step", size / 2**30, budget)
        return None, {"enabled": False, "reason": "too large", "bytes": size}
    datamodule.train_with_index = True
    return TeacherOutputCache(len(datamodule.train), stored), {
        "enabled": True, "bytes": size}


def check_compatible(cfg, datamodule) -> None:
    """Fail before any teacher is trained if student and teacher cannot be paired: the dry
    forward pass and the student initialisation run on untrained models of both."""
    info = datamodule.info
    student = build_model(cfg.model, info)
    teacher = Teacher(build_model(cfg.teacher.model, info, "teacher.model"), 1.0, {})
    if cfg.distill.student_init == "teacher":
        init_from_teacher(student, teacher.model)
    objective = build_objective(cfg.distill, regression=info.regression)
    if objective.terms:
        bind_objective(objective, student, [teacher], datamodule.example_batch(),
                       cfg.distill.layers)


def attach_training_labels(objective: DistillationObjective, datamodule) -> None:
    """Terms that read the sample indices (CRD's memory banks) learn the training set's
    labels, and the batches carry the indices."""
    labels = getattr(datamodule.train, "labels", None)
    names = [name for name, term in objective.terms.items() if term.needs_indices]
    if labels is None:
        raise ConfigError(f"distill.terms.{names[0]} needs the training set in memory (its "
                          "labels, sample by sample): use a data set read into memory, not "
                          "streamed shards")
    for name in names:
        objective.terms[name].attach_data(labels.numpy() if hasattr(labels, "numpy")
                                          else labels)
    datamodule.train_with_index = True


def distillation_module(cfg, datamodule, student: nn.Module, teachers: Sequence[Teacher],
                        module_class: Optional[type] = None, phase_dir: Optional[Path] = None
                        ) -> tuple[DistillationModule, dict]:
    """The student wired to ``distill``'s objective (plain cross-entropy without terms), its
    taps bound to the teachers' and the teacher-output cache set up when it applies;
    continued from the initialisation phase exported in ``phase_dir`` when given
    (lepton_exp.training.init_phase). Returns the module and the cache's run-record entry."""
    objective = build_objective(cfg.distill, regression=datamodule.info.regression)
    cache, cache_info = None, {"enabled": False, "reason": "no distillation terms"}
    if phase_dir is not None:
        phases.drop_finished_terms(objective)
    # student_init=teacher without terms: the teacher is not needed while training.
    training_teachers = teachers if objective.terms else []
    if objective.terms:
        teacher_taps = bind_objective(objective, student, teachers, datamodule.example_batch(),
                                      cfg.distill.layers)
        cache, cache_info = teacher_output_cache(cfg, datamodule, objective, teacher_taps)
        if objective.needs_indices:
            attach_training_labels(objective, datamodule)
    if phase_dir is not None:  # after bind: the terms' modules exist to load into
        phases.continue_from_phase(student, objective, phase_dir)
    module = (module_class or DistillationModule)(
        student, training_teachers, objective, datamodule.info, cfg.optim, cfg.scheduler,
        output_cache=cache)
    return module, cache_info


def fit_distillation(trainer, module: DistillationModule, datamodule, checkpoints: Checkpoints,
                     test: bool = True) -> dict:
    """``fit_and_test`` (or only the fit, continued from ``checkpoints.resume_from`` when
    set, with ``test=False``), then the taps' hooks are removed; returns fit_and_test's
    result and the teacher-output cache's statistics."""
    # Lightning warns about modules left in eval mode: the frozen teachers are, by design.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    try:
        if not test:
            trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoints.resume_from,
                        weights_only=True)
            result: dict = {}
        else:
            result = fit_and_test(trainer, checkpoints, module, datamodule)
    finally:
        module.student_tapper.remove()
        for tapper in module.teacher_tappers:
            tapper.remove()
        datamodule.train_with_index = False
    if module.output_cache is not None:
        result["cache_stats"] = module.output_cache.stats()
    return result
