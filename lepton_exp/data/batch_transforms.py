"""Transforms of whole batches of in-memory images: a training batch is cut from the split's
uint8 tensor, cropped, flipped and normalised as one tensor, on the device that trains
(``ImageClassificationData.on_after_batch_transfer``) or in the loader on CPU. Per sample,
torchvision's v2 pipeline costs tens of microseconds of Python (and a GPU waits for it);
here only the random draws are per sample.

The draws are torchvision's own, from the sample's seed (``data.base.sample_seed``) in the
order v2 makes them (``RandomCrop``: top, then left; ``RandomHorizontalFlip``: one uniform),
and the pixel operations are copies and the same v2 kernels: a batch equals, bit for bit,
the per-sample pipeline's output (tests/test_batch_transforms.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms import v2


@dataclass(frozen=True)
class Crop:
    """``v2.RandomCrop(size, padding)`` with zero fill."""

    size: tuple[int, int]
    padding: tuple[int, int, int, int]  # left, top, right, bottom


@dataclass(frozen=True)
class Flip:
    """``v2.RandomHorizontalFlip(p)``."""

    p: float


def batch_equivalents(transforms: Sequence[v2.Transform]) -> Optional[list]:
    """The batch form of a list of random v2 transforms, or None when one has none (the
    per-sample pipeline then runs)."""
    steps: list = []
    for transform in transforms:
        if isinstance(transform, v2.RandomCrop):
            # v2 keeps the fill by input type ({"others": 0} unless given per type)
            fills = transform._fill.values() if isinstance(transform._fill, dict) \
                else [transform._fill]
            if transform.padding_mode != "constant" or any(fill not in (0, None)
                                                           for fill in fills) \
                    or transform.pad_if_needed:
                return None
            left, right, top, bottom = transform.padding if transform.padding else (0,) * 4
            steps.append(Crop(tuple(transform.size), (left, top, right, bottom)))
        elif isinstance(transform, v2.RandomHorizontalFlip):
            steps.append(Flip(float(transform.p)))
        else:
            return None
    return steps


def draw(steps: Sequence, seeds: Sequence[int], image_size: tuple[int, int]) -> torch.Tensor:
    """Per sample, the random choices of ``steps`` from its seed, as v2 draws them:
    an N x 3 int64 tensor of (top, left, flipped)."""
    generator = torch.Generator()
    choices = torch.zeros(len(seeds), 3, dtype=torch.long)
    height, width = image_size
    for row, seed in enumerate(seeds):
        generator.manual_seed(int(seed))
        top = left = flipped = 0
        for step in steps:
            if isinstance(step, Crop):
                pad_left, pad_top, pad_right, pad_bottom = step.padding
                padded_height = height + pad_top + pad_bottom
                padded_width = width + pad_left + pad_right
                if padded_height > step.size[0]:
                    top = int(torch.randint(0, padded_height - step.size[0] + 1, size=(),
                                            generator=generator))
                if padded_width > step.size[1]:
                    left = int(torch.randint(0, padded_width - step.size[1] + 1, size=(),
                                             generator=generator))
            else:  # Flip: v2 skips the transform when the draw is >= p
                flipped = int(bool(torch.rand(1, generator=generator) < step.p))
        choices[row] = torch.tensor([top, left, flipped])
    return choices


def apply(steps: Sequence, images: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
    """``images`` (N x C x H x W) cropped and flipped as ``choices`` say: pure copies, on
    whatever device the batch is."""
    crop = next((step for step in steps if isinstance(step, Crop)), None)
    if crop is not None:
        pad_left, pad_top, pad_right, pad_bottom = crop.padding
        if any(crop.padding):
            images = F.pad(images, (pad_left, pad_right, pad_top, pad_bottom))
        height, width = crop.size
    else:
        height, width = images.shape[-2:]
    device = images.device
    choices = choices.to(device)
    rows = choices[:, :1] + torch.arange(height, device=device)  # N x h
    cols = choices[:, 1:2] + torch.arange(width, device=device)  # N x w
    flipped = choices[:, 2].bool()
    cols = torch.where(flipped[:, None], cols.flip(1), cols)
    samples = torch.arange(len(images), device=device)
    # advanced indices around the channel slice: N x h x w x C, back to N x C x h x w
    cut = images[samples[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return cut.permute(0, 3, 1, 2).contiguous()


class RawImages(NamedTuple):
    """A training batch as the loader hands it over when the transforms run on the device:
    the images as stored, what each sample's draws chose, labels (and indices)."""

    images: torch.Tensor
    choices: Optional[torch.Tensor]
    labels: torch.Tensor
    indices: Optional[torch.Tensor]


class BatchTransform:
    """The random ``steps`` (from the sample seeds) then the deterministic v2 ``finish``
    (dtype + normalisation), applied to one batch."""

    def __init__(self, steps: Sequence, finish: v2.Transform, image_size: tuple[int, int]):
        self.steps = list(steps)
        self.finish = finish
        self.image_size = image_size

    def choices(self, seeds: Optional[Sequence[int]]) -> Optional[torch.Tensor]:
        return draw(self.steps, seeds, self.image_size) if self.steps and seeds else None

    def __call__(self, raw: RawImages) -> tuple:
        images = raw.images
        if raw.choices is not None:
            images = apply(self.steps, images, raw.choices)
        images = self.finish(images)
        return (images, raw.labels) if raw.indices is None else (images, raw.labels,
                                                                 raw.indices)
