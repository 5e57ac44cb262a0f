"""Initialise a student from a teacher's weights (DistilBERT-style layer selection)."""

from __future__ import annotations

import re
from collections import defaultdict

from torch import nn

from lepton_exp.errors import ConfigError

# "layer1.2.conv1.weight" / "bert.encoder.layer.3.attention..." -> (prefix, block index, rest)
_NUMBERED = re.compile(r"^(.*?)\.(\d+)\.(.*)$")
MIN_FRACTION = 0.5  # of the student's weights, below which the architectures do not allow it


def _block_counts(names) -> dict[str, int]:
    counts: dict[str, set[int]] = defaultdict(set)
    for name in names:
        match = _NUMBERED.match(name)
        if match:
            counts[match.group(1)].add(int(match.group(2)))
    return {prefix: max(indices) + 1 for prefix, indices in counts.items()}


def teacher_name_for(name: str, student_blocks: dict[str, int],
                     teacher_blocks: dict[str, int]) -> str:
    """The teacher tensor a student tensor starts from: same name, with block i of a stack of
    n student blocks taken from teacher block i * (m // n) of m (every k-th block)."""
    match = _NUMBERED.match(name)
    if not match or match.group(1) not in teacher_blocks:
        return name
    prefix, index, rest = match.group(1), int(match.group(2)), match.group(3)
    stride = max(1, teacher_blocks[prefix] // student_blocks[prefix])
    return f"{prefix}.{index * stride}.{rest}"


def init_from_teacher(student: nn.Module, teacher: nn.Module) -> dict[str, float]:
    """Copy every teacher tensor whose (mapped) name and shape match; report what was copied."""
    student_state, teacher_state = student.state_dict(), teacher.state_dict()
    student_blocks, teacher_blocks = _block_counts(student_state), _block_counts(teacher_state)
    update, copied_params, total_params = {}, 0, 0
    for name, tensor in student_state.items():
        source = teacher_state.get(teacher_name_for(name, student_blocks, teacher_blocks))
        if tensor.is_floating_point():
            total_params += tensor.numel()
        if source is not None and source.shape == tensor.shape:
            update[name] = source.clone()
            if tensor.is_floating_point():
                copied_params += tensor.numel()
    fraction = copied_params / max(1, total_params)
    if fraction < MIN_FRACTION:  # a stray matching stem is no initialisation from the teacher
        raise ConfigError(
            f"distill.student_init=teacher: only {fraction:.0%} of the student's "
            f"({type(student).__name__}) weights match the teacher ({type(teacher).__name__}) by "
            "name and shape: use the same architecture family with equal widths, or "
            "distill.student_init=scratch")
    student.load_state_dict(update, strict=False)
    return {"tensors_copied": len(update), "tensors_total": len(student_state),
            "fraction_copied": round(fraction, 4)}
