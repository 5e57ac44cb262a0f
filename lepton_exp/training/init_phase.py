"""The initialisation phase of AB, FSP and FT (the CRD code's ``init`` stage), a run of its
own before distillation: the terms' ``init_parameters`` train on their ``init_loss`` alone,
at a constant lr, for ``init_epochs`` epochs. Its export is the student after the phase
(``model.safetensors``) and the terms' modules (``distill_state.safetensors``), which the
distillation run starts from."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from lepton_exp.errors import LeptonError
from lepton_exp.teachers import TrainRun
from lepton_exp.training.distill import DistillationModule
from lepton_exp.training.phases import phase_epochs, phased_terms
from lepton_exp.training.optim import build_optimizer

STAGE_NAME = "distill_init"
PHASE_DIR = "init"  # inside the distillation run's directory


class InitPhaseModule(DistillationModule):
    """The student and the phased terms' modules trained on the terms' initialisation
    losses; the teachers stay frozen. The student is in eval mode unless a term trains its
    layers (the CRD code's ``model_s.eval()`` then ``init_modules.train()``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.phased = phased_terms(dict(self.objective.terms))
        self.trains_student = any(term.init_trains_student for term in self.phased.values())
        # Only what the phase trains takes gradients: the rest (the classifier, other terms'
        # modules; FT: the whole student) would be unused parameters to DDP.
        trained = {id(p) for term in self.phased.values()
                   for p in term.init_parameters(self.model)}
        for parameter in self.parameters():
            if id(parameter) not in trained:
                parameter.requires_grad_(False)

    def on_train_epoch_start(self) -> None:
        self.model.train(self.trains_student)

    def training_step(self, batch, batch_idx):
        inputs, labels = batch[0], batch[1]
        indices = batch[2] if len(batch) > 2 else None
        # FT's phase reads the teacher alone: no student forward for nothing
        student = self.student_tapper(inputs) if self.trains_student else None
        teacher = self.teacher_taps(inputs, indices)[0]
        losses = {name: term.init_loss(student, teacher) for name, term in self.phased.items()}
        loss = sum(losses.values())
        self.stop_if_not_finite(loss, losses)
        self.log_train({"init_loss": loss, **{f"init_loss_{name}": value
                                              for name, value in losses.items()}}, len(labels))
        return loss

    def configure_optimizers(self):
        # One group per term at its init_lr; a parameter two terms train is in the first's.
        seen: set[int] = set()
        groups = []
        for term in self.phased.values():
            params = [p for p in term.init_parameters(self.model) if id(p) not in seen]
            seen.update(id(p) for p in params)
            lr = term.init_lr if term.init_lr is not None else self.optim_cfg.lr
            groups.append({"params": params, "lr": lr})
        return build_optimizer(groups, self.optim_cfg)  # constant lr, as the CRD code


def init_phase_config(cfg: DictConfig) -> DictConfig:
    """The phase's run config: the distillation run's, as stage distill_init, for the
    phase's epochs."""
    from omegaconf import OmegaConf

    from lepton_exp.config.registries import NONE, QUANT_METHODS

    phase_cfg = cfg.copy()
    phase_cfg.stage = STAGE_NAME
    phase_cfg.trainer.max_epochs = phase_epochs(cfg)
    # float: quantization applies to the distilled student, not to its initialisation
    phase_cfg.quant = OmegaConf.structured(QUANT_METHODS.get(NONE).Schema(method=NONE))
    phase_cfg.name = f"{cfg.name}-{PHASE_DIR}"
    return phase_cfg


def completed_phase(phase_cfg: DictConfig, phase_dir: Path) -> Optional[dict]:
    """The record of a complete phase of this config in ``phase_dir``, else None."""
    from lepton_exp.config.identity import computed_settings, to_container
    from lepton_exp.tracking.record import RECORD_NAME, read_record

    if not (phase_dir / RECORD_NAME).is_file():
        return None
    try:
        record = read_record(phase_dir)
    except ValueError:  # cut short by a crash: the run itself decides
        return None
    same = computed_settings(record.get("config") or {}) == computed_settings(
        to_container(phase_cfg))
    return record if same and record.get("status") == "completed" else None


def run_init_phase(cfg: DictConfig, train: TrainRun, run_dir: Path) -> Optional[dict]:
    """Run (or find complete, or continue) the phase in ``run_dir/init``; its record, or None
    when no configured term has a phase."""
    if phase_epochs(cfg) == 0:
        return None
    phase_dir = run_dir / PHASE_DIR
    phase_cfg = init_phase_config(cfg)
    record = completed_phase(phase_cfg, phase_dir)
    # (DDP ranks find the phase their launcher ran, complete: they never train it again)
    record = record or train(phase_cfg, run_dir=phase_dir)
    if record.get("status") != "completed":
        raise LeptonError(f"the initialisation phase in {phase_dir} ended with status "
                          f"{record.get('status')}: see its record there")
    return record
