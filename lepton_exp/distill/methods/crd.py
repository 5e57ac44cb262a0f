"""Contrastive representation distillation (Tian et al., ICLR 2020), as the CRD code runs it.

Student and teacher embeddings are projected to ``feature_dim`` and L2-normalised. Two
memory banks hold one vector per training sample, for each side; a batch contrasts each
sample's embedding with the other side's bank entry of the same sample (the positive) and
with ``negatives`` entries of samples of other classes (the code's "exact" mode), drawn per
step with a seed of (run seed, step, rank), so a resumed run draws the same ones. Scores are
exp(<u, v> / temperature) divided by a constant fixed at the first step (the code's Z); the
loss is the NCE loss of both directions. The banks then move towards the batch's embeddings
(momentum, re-normalised). Banks and constants are buffers: they are in the checkpoint, and
under DDP every rank applies every rank's update, so the ranks' banks agree.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lepton_exp.distill.base import DistillTerm, TermInputs

EPS = 1e-7


def crd_nce_loss(scores: torch.Tensor, num_data: int) -> torch.Tensor:
    """NCE loss of N x (1 + K) normalised scores, column 0 the positive: the noise
    distribution is uniform over the ``num_data`` samples (the CRD paper's Eq. 18)."""
    negatives = scores.shape[1] - 1
    noise = negatives / num_data
    positive = torch.log(scores[:, 0] / (scores[:, 0] + noise + EPS))
    negative = torch.log(noise / (scores[:, 1:] + noise + EPS))
    return -(positive.sum() + negative.sum()) / scores.shape[0]


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gathered(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's tensor, concatenated in rank order (the tensor itself without DDP)."""
    _, world = _world()
    if world == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world)]
    torch.distributed.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


class Term(DistillTerm):
    needs = "embedding"
    needs_indices = True

    def __init__(self, feature_dim: int = 128, negatives: int = 16384,
                 temperature: float = 0.07, momentum: float = 0.5):
        super().__init__()
        self.feature_dim = feature_dim
        self.negatives = negatives
        self.temperature = temperature
        self.momentum = momentum
        self.embed_student: nn.Module = nn.Identity()
        self.embed_teacher: nn.Module = nn.Identity()
        self._negative_pools: list[torch.Tensor] = []
        self.train_labels: Optional[torch.Tensor] = None

    def bind(self, student, teacher, pairs):
        super().bind(student, teacher, pairs)
        self.embed_student = nn.Linear(student.embedding.flatten(1).shape[1], self.feature_dim)
        self.embed_teacher = nn.Linear(teacher.embedding.flatten(1).shape[1], self.feature_dim)

    def attach_data(self, train_labels) -> None:
        labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
        self.train_labels = labels
        # per class, the samples of every other class
        self._negative_pools = [torch.nonzero(labels != c).flatten()
                                for c in range(int(labels.max()) + 1)]
        bound = 1.0 / math.sqrt(self.feature_dim / 3)  # the CRD code's initialisation
        for side in ("memory_student", "memory_teacher"):
            self.register_buffer(side, torch.rand(len(labels), self.feature_dim)
                                 .mul_(2 * bound).sub_(bound))
        self.register_buffer("normalisers", torch.full((2,), -1.0))  # Z, set at the first step

    def draw_negatives(self, indices: torch.Tensor, step: int) -> torch.Tensor:
        """N x K indices of samples of other classes (with replacement when a pool is
        smaller than K, as the code's np.random.choice)."""
        rank, _ = _world()
        device = indices.device  # drawn where the batch is: a GPU sorts 64 x 50k at once
        generator = torch.Generator(device=device).manual_seed(
            (torch.initial_seed() * 1_000_003 + step * 1009 + rank) % 2**63)
        if self._negative_pools[0].device != device:
            self._negative_pools = [pool.to(device) for pool in self._negative_pools]
        labels = self.train_labels[indices.cpu()]
        drawn = torch.empty(len(indices), self.negatives, dtype=torch.long, device=device)
        for label in labels.unique().tolist():
            rows = torch.nonzero(labels == label).flatten().to(device)
            pool = self._negative_pools[label]
            if self.negatives > len(pool):
                picks = torch.randint(len(pool), (len(rows), self.negatives), generator=generator,
                                      device=device)
            else:  # without replacement: the first K of a random order, per row
                picks = torch.rand(len(rows), len(pool), generator=generator,
                                   device=device).argsort(1)[:, :self.negatives]
            drawn[rows] = pool[picks]
        return drawn

    def forward(self, student, teachers, inputs: TermInputs):
        if self.train_labels is None or inputs.indices is None:
            raise RuntimeError("crd needs the training set's labels and the batch's indices")
        # float32 throughout: exp(1 / 0.07) overflows half precision
        with torch.autocast(student.logits.device.type, enabled=False):
            student_vec = F.normalize(self.embed_student(student.embedding.flatten(1).float()))
            teacher_vec = F.normalize(self.embed_teacher(teachers[0].embedding.flatten(1).float()))
            indices = inputs.indices
            sample = torch.cat([indices[:, None], self.draw_negatives(indices, inputs.step)], 1)
            # student anchors against the teacher bank, teacher anchors against the student's
            student_scores = self._scores(self.memory_teacher[sample], student_vec, 0)
            teacher_scores = self._scores(self.memory_student[sample], teacher_vec, 1)
            loss = (crd_nce_loss(student_scores, len(self.train_labels))
                    + crd_nce_loss(teacher_scores, len(self.train_labels)))
            self._update_banks(indices, student_vec.detach(), teacher_vec.detach())
        return loss

    def _scores(self, bank_rows: torch.Tensor, anchors: torch.Tensor, side: int) -> torch.Tensor:
        scores = torch.exp(torch.bmm(bank_rows, anchors[:, :, None]).squeeze(-1)
                           / self.temperature)
        if self.normalisers[side] < 0:  # the first step fixes Z (mean over all ranks)
            mean = _gathered(scores.detach().mean()[None]).mean()
            self.normalisers[side] = mean * len(self.train_labels)
        return scores / float(self.normalisers[side])  # a constant, like the code's .item()

    @torch.no_grad()
    def _update_banks(self, indices: torch.Tensor, student_vec: torch.Tensor,
                      teacher_vec: torch.Tensor) -> None:
        indices = _gathered(indices)
        # a sample twice in one step (DistributedSampler pads with repeats): its last copy
        # updates the bank, on every rank alike (index_copy_ leaves the order undefined on GPU)
        order = torch.arange(len(indices), device=indices.device)
        last = torch.full((len(self.train_labels),), -1, dtype=torch.long,
                          device=indices.device).scatter_reduce(0, indices, order, "amax")
        keep = last[indices] == order
        for bank, vectors in ((self.memory_student, _gathered(student_vec)),
                              (self.memory_teacher, _gathered(teacher_vec))):
            moved = bank[indices] * self.momentum + vectors * (1 - self.momentum)
            bank.index_copy_(0, indices[keep], F.normalize(moved)[keep])
