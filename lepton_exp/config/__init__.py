"""Configuration: schemas (``schemas``), their registration with Hydra (``store``), checks
that types cannot express (``validate``), composing ``conf/`` (``compose``), and which settings
make two runs the same run (``identity``). Importing this package imports none of them."""

from __future__ import annotations

from pathlib import Path

# lepton_exp/conf is a symlink to the repository's conf/ (a real directory once installed).
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
ROOT_CONFIG = "train"
RECORD_NAME = "summary.json"  # the run record in each run directory (tracking.record)
