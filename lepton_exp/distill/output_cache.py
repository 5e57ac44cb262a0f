"""Teacher outputs per training sample, computed on first sight and reused on later epochs.

Valid only when a sample's input is identical every epoch (no random augmentation) and the
teacher is frozen in eval mode — both hold for distillation with ``data.augment=false``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from lepton_exp.models.taps import Taps

# What a term may read from the teacher, by kind: stage maps (features, preact) by index, the
# embedding as index 0 of its own kind.
Stored = dict[str, set[int]]


def _tensors(teacher: Taps, stored: Stored) -> dict[tuple[str, int], torch.Tensor]:
    tensors = {("logits", 0): teacher.logits}
    for kind, taps in stored.items():
        for tap in taps:
            tensors[(kind, tap)] = (teacher.embedding if kind == "embedding"
                                    else getattr(teacher, kind)[tap])
    return tensors


def _per_teacher(taps: Sequence[Taps], stored: Stored) -> list[Stored]:
    """Terms other than the logit ones read the first (primary) teacher only."""
    return [stored if index == 0 else {} for index in range(len(taps))]


def bytes_per_sample(taps: Sequence[Taps], stored: Stored) -> int:
    """Stored bytes per sample: every teacher's logits, the first teacher's read taps."""
    return sum(t[0].numel() * t.element_size()
               for teacher, kept in zip(taps, _per_teacher(taps, stored), strict=True)
               for t in _tensors(teacher, kept).values())


def _as_taps(tensors: dict[tuple[str, int], torch.Tensor]) -> Taps:
    taps = Taps(logits=tensors[("logits", 0)], embedding=tensors.get(("embedding", 0)))
    for kind in ("features", "preact"):
        indices = [tap for (k, tap) in tensors if k == kind]
        if indices:
            maps: list[Optional[torch.Tensor]] = [None] * (max(indices) + 1)
            for tap in indices:
                maps[tap] = tensors[(kind, tap)]
            setattr(taps, kind, maps)
    return taps


class TeacherOutputCache:
    def __init__(self, num_samples: int, stored: Stored):
        self.num_samples = num_samples
        self.stored = {kind: set(taps) for kind, taps in stored.items()}
        self.filled = torch.zeros(num_samples, dtype=torch.bool)
        self._tensors: list[dict[tuple[str, int], torch.Tensor]] = []  # one per teacher
        self._kept: list[Stored] = []  # what is stored of each teacher
        self.computed = 0  # samples that went through the teachers

    def missing(self, indices: torch.Tensor) -> torch.Tensor:
        """Mask of the samples (of ``indices``) whose outputs are not stored yet."""
        return ~self.filled[indices.cpu()]

    def get(self, indices: torch.Tensor) -> list[Taps]:
        """The teachers' taps for these samples, all of which must be stored (see missing)."""
        if not self._tensors or bool(self.missing(indices).any()):
            raise KeyError("teacher outputs requested before they were stored")
        return [_as_taps({key: stored[indices] for key, stored in tensors.items()})
                for tensors in self._tensors]

    def put(self, indices: torch.Tensor, taps: Sequence[Taps],
            only: Optional[torch.Tensor] = None) -> None:
        """Store the taps of ``indices`` (of those where the mask ``only`` holds)."""
        rows = slice(None) if only is None else only.to(taps[0].logits.device)
        if only is not None:
            indices = indices[only.to(indices.device)]
        if not self._tensors:  # allocate on first use, on the device and dtype of the outputs
            self._kept = _per_teacher(taps, self.stored)
            for teacher, kept in zip(taps, self._kept, strict=True):
                self._tensors.append({key: t.new_zeros((self.num_samples, *t.shape[1:]))
                                      for key, t in _tensors(teacher, kept).items()})
        self.computed += len(indices)
        for teacher, kept, tensors in zip(taps, self._kept, self._tensors, strict=True):
            outputs = _tensors(teacher, kept)
            for key, stored in tensors.items():
                stored[indices] = outputs[key][rows].detach()
        self.filled[indices.cpu()] = True

    def stats(self) -> dict[str, int]:
        return {"teacher_forwards": self.computed, "samples_stored": int(self.filled.sum())}
