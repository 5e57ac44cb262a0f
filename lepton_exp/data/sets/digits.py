"""scikit-learn's bundled handwritten digits: 1797 8x8 grey images, no download."""

from __future__ import annotations

from dataclasses import dataclass

from lepton_exp.config.checks import check_range
from lepton_exp.config.schemas import DataConfig

MEAN = (0.3,)  # pixel statistics of the whole set after scaling 0..16 -> 0..1
STD = (0.38,)


@dataclass
class Schema(DataConfig):
    test_size: float = 0.2  # digits has no official test split: carve one (stratified)


def check(cfg):
    yield check_range("data.test_size", cfg.data.test_size, 0, 1, low_open=True)


def load(cfg):
    import torch
    from sklearn.datasets import load_digits

    from lepton_exp.data.base import Split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return Split(images, torch.tensor(digits.target, dtype=torch.long)), None


def build(cfg):
    from lepton_exp.data.image import ImageClassificationData

    return ImageClassificationData(cfg, num_classes=10, load=load, mean=MEAN, std=STD,
                                   class_names=tuple(str(digit) for digit in range(10)))
