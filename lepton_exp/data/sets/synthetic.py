"""Generated class-conditional images for tests: each class is a fixed random pattern plus
noise, so a model can learn it in an epoch and nothing touches the disk."""

from __future__ import annotations

from dataclasses import dataclass

from lepton_exp.config.checks import check_range
from lepton_exp.config.schemas import DataConfig


@dataclass
class Schema(DataConfig):
    num_classes: int = 4
    channels: int = 3
    image_size: int = 16
    num_samples: int = 512  # training pool; val/test are carved from it
    test_size: float = 0.2
    noise: float = 1.0


def check(cfg):
    data = cfg.data
    yield check_range("data.test_size", data.test_size, 0, 1, low_open=True)
    for key in ("num_samples", "channels", "image_size"):
        yield check_range(f"data.{key}", data[key], 1)
    yield check_range("data.num_classes", data.num_classes, 2)
    yield check_range("data.noise", data.noise, 0)


def load(cfg):
    import torch

    from lepton_exp.data.base import Split

    generator = torch.Generator().manual_seed(cfg.split_seed)
    shape = (cfg.channels, cfg.image_size, cfg.image_size)
    prototypes = torch.rand((cfg.num_classes, *shape), generator=generator)
    labels = torch.arange(cfg.num_samples) % cfg.num_classes
    noise = torch.randn((cfg.num_samples, *shape), generator=generator) * cfg.noise * 0.25
    images = (prototypes[labels] + noise).clamp(0, 1)
    return Split(images, labels), None


def build(cfg):
    from lepton_exp.data.image import ImageClassificationData

    # classes and channels are configurable, so are the statistics
    return ImageClassificationData(cfg, num_classes=cfg.num_classes, load=load,
                                   mean=(0.5,) * cfg.channels, std=(0.25,) * cfg.channels)
