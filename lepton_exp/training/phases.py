"""Which configured methods have an initialisation phase, and what a distillation run keeps
from it (lepton_exp.training.init_phase): the student's weights and the terms' modules."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from lepton_exp.distill.base import PhasedTerm
from lepton_exp.distill.objective import DistillationObjective

STATE_NAME = "distill_state.safetensors"  # the terms' modules after the phase


def phased_terms(terms: dict) -> dict[str, PhasedTerm]:
    """The terms whose initialisation phase runs (``init_epochs`` > 0)."""
    return {name: term for name, term in terms.items()
            if isinstance(term, PhasedTerm) and term.init_epochs > 0}


def drop_finished_terms(objective: DistillationObjective) -> None:
    """The terms without a loss after their phase (AB, FSP) leave the objective."""
    for name, term in phased_terms(dict(objective.terms)).items():
        if not term.after_init:
            del objective.terms[name]


def continue_from_phase(student: nn.Module, objective: DistillationObjective,
                        phase_dir: Path) -> None:
    """The student's weights from the phase, and the trained modules of the terms that stay
    (FT's paraphraser, then fixed)."""
    from safetensors.torch import load_file

    from lepton_exp.teachers.load import read_state_dict

    student.load_state_dict(read_state_dict(phase_dir / "model.safetensors",
                                            "the initialisation phase's model"))
    state = load_file(str(phase_dir / STATE_NAME))
    for name, term in phased_terms(dict(objective.terms)).items():
        prefix = f"terms.{name}."
        term.load_state_dict({key.removeprefix(prefix): value for key, value in state.items()
                              if key.startswith(prefix)})
        term.finish_init()


def configured_phases(cfg: DictConfig) -> dict[str, int]:
    """The configured terms with an initialisation phase, and their ``init_epochs`` (> 0)."""
    import inspect

    from lepton_exp.config.checks import term_class

    phases = {}
    for name, options in (cfg.distill.terms or {}).items():
        if issubclass(term_class(name), PhasedTerm):
            default = inspect.signature(term_class(name)).parameters["init_epochs"].default
            epochs = int((options or {}).get("init_epochs", default))
            if epochs > 0:
                phases[name] = epochs
    return phases


def phase_epochs(cfg: DictConfig) -> int:
    """The phase's length: the longest ``init_epochs`` of the configured phased terms (0:
    no phase)."""
    return max(configured_phases(cfg).values(), default=0)
