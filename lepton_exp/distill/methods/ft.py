"""Factor transfer (Kim et al., NeurIPS 2018): a paraphraser, an autoencoder trained on the
teacher's last stage, gives "factors"; the student's translator learns to produce them.

Two phases, as in the CRD code: the paraphraser first trains to reconstruct the teacher's
map (``init_epochs`` epochs, lr ``init_lr``: 0.01 for the CIFAR models there), then it stays
fixed and the student + translator train on the factor loss beside the labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lepton_exp.distill.base import PhasedTerm, TermInputs
from lepton_exp.distill.layers import check_spatial, pool_to_common_size


def factor(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Channel mean of a^p, flattened and L2-normalised per sample: N x (H*W)."""
    return F.normalize(feature.pow(p).mean(1).flatten(1))


def ft_loss(student_factor: torch.Tensor, teacher_factor: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the normalised factors (the CRD code's p1=2, p2=1); the
    larger map is pooled to the smaller size first."""
    student_factor, teacher_factor = pool_to_common_size(student_factor, teacher_factor)
    return (factor(student_factor) - factor(teacher_factor)).abs().mean()


def _conv_stack(channels: list[int], layer, batch_norm: bool) -> nn.Sequential:
    """3x3 (de)convolutions between successive channel counts, each (BN and) LeakyReLU 0.1."""
    modules: list[nn.Module] = []
    for in_chs, out_chs in zip(channels[:-1], channels[1:]):
        modules.append(layer(in_chs, out_chs, 3, 1, 1))
        if batch_norm:
            modules.append(nn.BatchNorm2d(out_chs))
        modules.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*modules)


class Paraphraser(nn.Module):
    """Encoder C -> kC -> kC and decoder kC -> C -> C, without BN (the CRD code's)."""

    def __init__(self, channels: int, rate: float = 0.5):
        super().__init__()
        factor_chs = int(channels * rate)
        self.encoder = _conv_stack([channels, channels, factor_chs, factor_chs], nn.Conv2d,
                                   False)
        self.decoder = _conv_stack([factor_chs, factor_chs, channels, channels],
                                   nn.ConvTranspose2d, False)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(feature))


class Term(PhasedTerm):
    needs = "features"
    after_init = True
    init_trains_student = False

    def __init__(self, rate: float = 0.5, init_epochs: int = 30, init_lr: float | None = 0.01,
                 layers: dict | None = None):
        super().__init__(init_epochs, init_lr, layers)
        self.rate = rate
        self.paraphraser: nn.Module = nn.Identity()
        self.translator: nn.Module = nn.Identity()

    def bind(self, student, teacher, pairs):
        super().bind(student, teacher, pairs)
        (s, t), = pairs[-1:]  # one pair: the last stages (conf/distill/ft.yaml)
        check_spatial("ft", s, t, student.features[s], teacher.features[t], self.layers_key)
        teacher_chs = teacher.features[t].shape[1]
        self.paraphraser = Paraphraser(teacher_chs, self.rate)
        # the translator: the paraphraser's encoder shape from the student's channels, with BN
        self.translator = _conv_stack([student.features[s].shape[1], student.features[s].shape[1],
                                       int(teacher_chs * self.rate),
                                       int(teacher_chs * self.rate)], nn.Conv2d, True)
        if self.init_epochs == 0:  # no phase: the paraphraser stays as initialised
            self.finish_init()

    def _pair(self, student, teacher):
        s, t = self.pairs[-1]
        return student.features[s], teacher.features[t]

    def init_loss(self, student, teacher):  # the teacher's map alone (student: None)
        teacher_map = teacher.features[self.pairs[-1][1]]
        return F.mse_loss(self.paraphraser(teacher_map), teacher_map)

    def init_parameters(self, student_model):
        return list(self.paraphraser.parameters())

    def finish_init(self) -> None:
        self.paraphraser.requires_grad_(False)  # fixed after its phase (not in the optimiser)

    def forward(self, student, teachers, inputs: TermInputs):
        student_map, teacher_map = self._pair(student, teachers[0])
        return ft_loss(self.translator(student_map), self.paraphraser.encoder(teacher_map))
