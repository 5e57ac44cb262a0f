from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


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
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lepton_exp.config import CONF_DIR, ROOT_CONFIG

    def _compose(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=ROOT_CONFIG, overrides=list(overrides))

    return _compose


@pytest.fixture
def cifar10_dir() -> Path:
    path = SHARED_DATA / "cifar10"
    if not (path / "train.npz").exists():
        pytest.skip(f"real CIFAR-10 not found at {path}")
    return path
