"""Data sets by name: `data=<name>` selects one; adding one is a module + a yaml in conf/data."""

from __future__ import annotations

from lepton_exp.config import ConfigError
from lepton_exp.data.base import ClassificationData, DataInfo, ImageClassificationData, Split
from lepton_exp.data.cifar import Cifar100Data, CifarData
from lepton_exp.data.digits import DigitsData
from lepton_exp.data.synthetic import SyntheticData
from lepton_exp.data.text import Sst2Data, SyntheticTextData

DATASETS: dict[str, type[ClassificationData]] = {
    "digits": DigitsData,
    "cifar10": CifarData,
    "cifar100": Cifar100Data,
    "synthetic": SyntheticData,
    "sst2": Sst2Data,
    "synthetic_text": SyntheticTextData,
}


def build_datamodule(cfg) -> ClassificationData:
    if cfg.name not in DATASETS:
        raise ConfigError(f"unknown data set '{cfg.name}': choose one of {', '.join(DATASETS)}")
    return DATASETS[cfg.name](cfg)


__all__ = ["DATASETS", "ClassificationData", "DataInfo", "ImageClassificationData", "Split",
           "build_datamodule"]
