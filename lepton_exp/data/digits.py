"""scikit-learn's bundled handwritten digits: 1797 8x8 grey images, no download."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from lepton_exp.data.base import ImageClassificationData, Split


class DigitsData(ImageClassificationData):
    num_classes = 10
    mean = (0.3,)  # pixel statistics of the whole set after scaling 0..16 -> 0..1
    std = (0.38,)

    def load(self):
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        return Split(images, torch.tensor(digits.target, dtype=torch.long)), None
