"""Generated class-conditional images for tests: each class is a fixed random pattern plus
noise, so a model can learn it in an epoch and nothing touches the disk."""

from __future__ import annotations

import torch

from lepton_exp.data.base import ImageClassificationData, Split


class SyntheticData(ImageClassificationData):
    def __init__(self, cfg):  # classes and channels are configurable, so are the stats
        super().__init__(cfg)
        self.num_classes = cfg.num_classes
        self.mean = (0.5,) * cfg.channels
        self.std = (0.25,) * cfg.channels

    def load(self):
        cfg = self.cfg
        generator = torch.Generator().manual_seed(cfg.split_seed)
        shape = (cfg.channels, cfg.image_size, cfg.image_size)
        prototypes = torch.rand((cfg.num_classes, *shape), generator=generator)
        labels = torch.arange(cfg.num_samples) % cfg.num_classes
        noise = torch.randn((cfg.num_samples, *shape), generator=generator) * cfg.noise * 0.25
        images = (prototypes[labels] + noise).clamp(0, 1)
        return Split(images, labels), None
