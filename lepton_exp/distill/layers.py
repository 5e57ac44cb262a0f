"""Which student tap is paired with which teacher tap, and how paired shapes are bridged."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lepton_exp.errors import ConfigError

AUTO = "auto"
UNIFORM = "uniform"  # the same as auto
LAST = "last"  # the last tap only (MiniLM's last-layer attention)
HEAD_MODES = ("match", "mean")


def uniform_taps(available: int, count: int) -> list[int]:
    """`count` of the taps 1..available-1, every k-th (TinyBERT's g(i) = i * m / n, rounded
    half up), ending at the last tap; index 0, the stem or embedding output, is left out."""
    layers = available - 1
    return [int(np.floor(i * layers / count + 0.5)) for i in range(1, count + 1)]


def resolve_pairs(student_spec: Any, teacher_spec: Any, student_taps: int, teacher_taps: int,
                  where: str) -> list[tuple[int, int]]:
    """Pairs (student tap, teacher tap) from two specs, each ``auto`` or a list of indices.

    ``auto`` maps stages uniformly: as many pairs as the shallower model has stages (taps
    after the stem), spread over the deeper one, last stage to last stage.
    """
    student_spec = AUTO if student_spec == UNIFORM else student_spec
    teacher_spec = AUTO if teacher_spec == UNIFORM else teacher_spec
    count = None
    if LAST in (student_spec, teacher_spec):
        count = 1
    elif student_spec != AUTO:
        count = len(student_spec)
    elif teacher_spec != AUTO:
        count = len(teacher_spec)
    if count is None:
        count = min(student_taps, teacher_taps) - 1
        if count < 1:
            raise ConfigError(f"{where}=auto: the models have no taps besides the stem; "
                              "list the taps to pair")
    student = _indices(student_spec, student_taps, count, f"{where}.student", "student")
    teacher = _indices(teacher_spec, teacher_taps, count, f"{where}.teacher", "teacher")
    if len(student) != len(teacher):
        raise ConfigError(f"{where}.student={student} and {where}.teacher={teacher} must pair "
                          "one to one: give both lists the same length")
    return list(zip(student, teacher, strict=True))


def _indices(spec: Any, available: int, count: int, key: str, model: str) -> list[int]:
    if spec == AUTO:
        return uniform_taps(available, count)
    if spec == LAST:
        return [available - 1]
    indices = list(spec)
    for index in indices:
        if not isinstance(index, int) or not 0 <= index < available:
            raise ConfigError(f"{key}={indices}: the {model} has taps 0..{available - 1} "
                              "(0 = stem/embeddings)")
    return indices


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(str(size) for size in tensor.shape[1:])


def _check_dims(term: str, student_index: int, teacher_index: int, student: torch.Tensor,
                teacher: torch.Tensor, dims: int, kind: str, fix: str) -> None:
    if student.dim() != dims or teacher.dim() != dims:
        raise ConfigError(
            f"distill term {term} needs {kind} but student tap {student_index} is "
            f"{_shape(student)} and teacher tap {teacher_index} is {_shape(teacher)}: {fix}")


def check_spatial(term: str, student_index: int, teacher_index: int, student: torch.Tensor,
                  teacher: torch.Tensor, key: str = "distill.layers") -> None:
    _check_dims(term, student_index, teacher_index, student, teacher, 4,
                "feature maps (C x H x W)", f"choose map taps with {key}")


def check_maps(term: str, student: Any, teacher: Any, pairs: list[tuple[int, int]],
               key: str = "distill.layers") -> None:
    """Every pair of ``pairs`` is two CNN feature maps; a model whose taps are all token
    sequences (a transformer's hidden states) has none, which says so in one line."""
    for model, taps in (("student", student.features), ("teacher", teacher.features)):
        if not any(tap is not None and tap.dim() == 4 for tap in taps):
            raise ConfigError(
                f"distill term {term} compares CNN feature maps (C x H x W), which the {model} "
                "does not have (its taps are token sequences): use it with CNNs, or hidden, "
                "attn_mse or attn_kl for transformers")
    for s, t in pairs:
        check_spatial(term, s, t, student.features[s], teacher.features[t], key)


def check_vectors(term: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
    """Both embeddings (the classifiers' inputs) are N x D vectors."""
    if student.dim() != 2 or teacher.dim() != 2:
        raise ConfigError(
            f"distill term {term} needs N x D embeddings (the classifiers' inputs) but the "
            f"student's is {_shape(student)} and the teacher's {_shape(teacher)} per sample: "
            "use models whose classifier reads a pooled vector")


def connector_for(term: str, student_index: int, teacher_index: int, student: torch.Tensor,
                  teacher: torch.Tensor, key: str = "distill.layers") -> nn.Module:
    """1x1 conv + BN between feature maps, a linear map between vectors or token sequences."""
    if student.dim() == 4 and teacher.dim() == 4:
        return nn.Sequential(nn.Conv2d(student.shape[1], teacher.shape[1], 1, bias=False),
                             nn.BatchNorm2d(teacher.shape[1]))
    if student.dim() == teacher.dim() == 2 or (
            student.dim() == teacher.dim() == 3 and student.shape[1] == teacher.shape[1]):
        return nn.Linear(student.shape[-1], teacher.shape[-1])
    raise ConfigError(
        f"distill term {term} cannot bridge student tap {student_index} ({_shape(student)}) "
        f"to teacher tap {teacher_index} ({_shape(teacher)}): pair taps of the same kind "
        f"(maps with maps, vectors with vectors) with {key}")


def convreg_connector(term: str, student_index: int, teacher_index: int,
                      student: torch.Tensor, teacher: torch.Tensor,
                      key: str = "distill.layers", relu: bool = True) -> nn.Module:
    """The CRD code's ConvReg between feature maps: a conv with bias that also matches the
    spatial size (3x3 stride 2 from a map twice the teacher's, a 4x4 stride-2 transposed conv
    from one half its size, else a (1 + sH - tH) x (1 + sW - tW) kernel), then BN and ReLU."""
    check_spatial(term, student_index, teacher_index, student, teacher, key)
    (student_h, student_w), (teacher_h, teacher_w) = student.shape[-2:], teacher.shape[-2:]
    channels_in, channels_out = student.shape[1], teacher.shape[1]
    if (student_h, student_w) == (2 * teacher_h, 2 * teacher_w):
        conv = nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1)
    elif (2 * student_h, 2 * student_w) == (teacher_h, teacher_w):
        conv = nn.ConvTranspose2d(channels_in, channels_out, 4, stride=2, padding=1)
    elif student_h >= teacher_h and student_w >= teacher_w:
        conv = nn.Conv2d(channels_in, channels_out,
                         (1 + student_h - teacher_h, 1 + student_w - teacher_w))
    else:
        raise ConfigError(
            f"distill term {term}: the convreg connector cannot map student tap "
            f"{student_index} ({_shape(student)}) to teacher tap {teacher_index} "
            f"({_shape(teacher)}): it needs a student map half, twice or at least the "
            f"teacher's size; pair other taps with {key}"
            + (" or use connector=conv_bn" if term == "fitnet" else ""))
    layers = [conv, nn.BatchNorm2d(channels_out)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


def pool_to_common_size(student: torch.Tensor,
                        teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool the spatially larger of two feature maps to the smaller's size."""
    if student.dim() != 4 or student.shape[-2:] == teacher.shape[-2:]:
        return student, teacher
    student_hw, teacher_hw = student.shape[-2:], teacher.shape[-2:]
    if student_hw[0] * student_hw[1] > teacher_hw[0] * teacher_hw[1]:
        return F.adaptive_avg_pool2d(student, teacher_hw), teacher
    return student, F.adaptive_avg_pool2d(teacher, student_hw)


def check_tokens(term: str, student_index: int, teacher_index: int, student: torch.Tensor,
                 teacher: torch.Tensor, key: str = "distill.layers") -> None:
    _check_dims(term, student_index, teacher_index, student, teacher, 3,
                "token sequences (transformers' hidden states, L x H)", "use fitnet/at for CNNs")


def check_heads(term: str, mode: str, student: list, teacher: list,
                pairs: list[tuple[int, int]]) -> None:
    """Attention terms pair layers 1..L (index i = the i-th attention map)."""
    if mode not in HEAD_MODES:
        raise ConfigError(f"distill.terms.{term}.heads={mode} is not one of "
                          f"{', '.join(HEAD_MODES)}")
    for s, t in pairs:
        if s < 1 or t < 1:
            raise ConfigError(f"distill term {term} pairs attention layers 1..L; tap 0 (the "
                              f"embeddings) has no attention: change distill.terms.{term}.layers")
        student_heads, teacher_heads = student[s - 1].shape[1], teacher[t - 1].shape[1]
        if mode == "match" and student_heads != teacher_heads:
            raise ConfigError(
                f"distill term {term}: the student has {student_heads} attention heads and the "
                f"teacher {teacher_heads}: set distill.terms.{term}.heads=mean (compare "
                "head-averaged maps) or use models with as many heads")


def reduce_heads(mode: str, student: torch.Tensor,
                 teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean``: both N x heads x L x L maps averaged over heads (N x 1 x L x L), so models
    with different head counts can be compared; ``match``: unchanged."""
    if mode == "mean":
        return student.mean(dim=1, keepdim=True), teacher.mean(dim=1, keepdim=True)
    return student, teacher


def pair_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """N x 1 x L x L: 1 where both the query and the key are real tokens."""
    mask = attention_mask.bool()
    return (mask[:, None, :, None] & mask[:, None, None, :])
