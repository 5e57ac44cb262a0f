from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
# Before any test module is collected: Hugging Face libraries read these when imported
# (an import during collection would otherwise try the network, and wait for it).
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")


@pytest.fixture(autouse=True, scope="session")
def _offline_environment(tmp_path_factory):
    """Tests never touch the network or the repository: W&B offline, outputs in a temp dir."""
    outputs = tmp_path_factory.mktemp("outputs")
    saved = dict(os.environ)
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", HF_HUB_OFFLINE="1",
                      LEPTON_OUTPUT_DIR=str(outputs))
    os.environ.pop("HYDRA_FULL_ERROR", None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def compose_cfg():
    """Compose conf/ like the CLI does (without starting a run)."""
    from hydra.core.global_hydra import GlobalHydra

    from lepton_exp.config.compose import compose_config

    def _compose(*overrides: str):
        GlobalHydra.instance().clear()
        return compose_config(list(overrides), explain=False)

    return _compose


@pytest.fixture
def cifar10_dir() -> Path:
    path = SHARED_DATA / "cifar10"
    if not (path / "train.npz").exists():
        pytest.skip(f"real CIFAR-10 not found at {path}")
    return path
