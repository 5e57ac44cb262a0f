"""CIFAR-100: CIFAR-10's loader, schema and checks with 100 classes and their statistics
(npz files, or torchvision's cifar-100-python layout)."""

from __future__ import annotations

from lepton_exp.data.sets import cifar10
from lepton_exp.data.sets.cifar10 import Schema, check  # noqa: F401 - this entry's own

MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)


def build(cfg):
    return cifar10.build(cfg, num_classes=100, mean=MEAN, std=STD)
