"""Teacher outputs per training sample, computed on first sight and reused on later epochs.

Valid only when a sample's input is identical every epoch (no random augmentation) and the
teacher is frozen in eval mode — both hold for distillation with ``data.augment=false``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from lepton_exp.models.taps import Taps


def _stored(taps: Sequence[Taps], feature_taps: set[int]) -> list[list[int]]:
    """Which feature taps are stored per teacher: feature terms read the first teacher only."""
    return [sorted(feature_taps) if index == 0 else [] for index in range(len(taps))]


def bytes_per_sample(taps: Sequence[Taps], feature_taps: set[int]) -> int:
    """Stored bytes per sample: every teacher's logits, the first teacher's feature taps."""
    total = 0
    for teacher, stored in zip(taps, _stored(taps, feature_taps), strict=True):
        tensors = [teacher.logits] + [teacher.features[i] for i in stored]
        total += sum(t[0].numel() * t.element_size() for t in tensors)
    return total


class TeacherOutputCache:
    def __init__(self, num_samples: int, feature_taps: set[int]):
        self.num_samples = num_samples
        self.feature_taps = set(feature_taps)
        self.filled = torch.zeros(num_samples, dtype=torch.bool)
        self._logits: list[torch.Tensor] = []  # one N x C tensor per teacher
        self._features: list[dict[int, torch.Tensor]] = []
        self.computed = 0  # samples that went through the teachers

    def missing(self, indices: torch.Tensor) -> torch.Tensor:
        """Mask of the samples (of ``indices``) whose outputs are not stored yet."""
        return ~self.filled[indices.cpu()]

    def get(self, indices: torch.Tensor) -> list[Taps]:
        """The teachers' taps for these samples, all of which must be stored (see missing)."""
        if not self._logits or bool(self.missing(indices).any()):
            raise KeyError("teacher outputs requested before they were stored")
        taps = []
        for logits, features in zip(self._logits, self._features, strict=True):
            feature_list: list[Optional[torch.Tensor]] = [None] * (max(features, default=-1) + 1)
            for tap, stored in features.items():
                feature_list[tap] = stored[indices]
            taps.append(Taps(logits=logits[indices], features=feature_list))
        return taps

    def put(self, indices: torch.Tensor, taps: Sequence[Taps]) -> None:
        if not self._logits:  # allocate on first use, on the device and dtype of the outputs
            for teacher, stored in zip(taps, _stored(taps, self.feature_taps), strict=True):
                self._logits.append(teacher.logits.new_zeros(
                    (self.num_samples, *teacher.logits.shape[1:])))
                self._features.append({tap: teacher.features[tap].new_zeros(
                    (self.num_samples, *teacher.features[tap].shape[1:])) for tap in stored})
        self.computed += len(indices)
        for teacher, logits, features in zip(taps, self._logits, self._features, strict=True):
            logits[indices] = teacher.logits.detach()
            for tap, stored in features.items():
                stored[indices] = teacher.features[tap].detach()
        self.filled[indices.cpu()] = True

    def stats(self) -> dict[str, int]:
        return {"teacher_forwards": self.computed, "samples_stored": int(self.filled.sum())}
