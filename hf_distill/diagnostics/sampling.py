"""Diagnostics of a training batch on a random subset of its target positions, from the loss's own inputs.

Why a subset: the chunked loss never holds full (tokens x vocab) logits, and the diagnostics need several
elementwise passes (softmaxes, top-k, correlation); a few hundred positions estimate the means well at a small
fraction of a step. Only the sampled rows are projected, so the fused (hidden states + lm_head) path stays fused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..losses.teacher_mixture import TeacherMixture
from ..losses.token_kd import IGNORE_INDEX, KDLossSpec, LogitSource, project_rows
from .statistics import diagnostic_sums, empty_sums


def supports_teacher(teacher: Any) -> bool:
    """Whether the teacher signal has full logits to compare with (a dense source or a mixture of them)."""
    return isinstance(teacher, (LogitSource, TeacherMixture))


def sample_rows(targets: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """Up to ``count`` distinct row indices whose target is not -100, chosen uniformly, in ascending order."""
    rows = torch.nonzero(targets != IGNORE_INDEX).squeeze(1)
    if rows.numel() <= count:
        return rows
    choice = torch.randperm(rows.numel(), generator=generator)[:count].to(rows.device)
    return rows.index_select(0, choice.sort().values)


@torch.no_grad()
def sampled_diagnostic_sums(
    student: LogitSource,
    teacher: LogitSource | TeacherMixture,
    targets: Tensor,
    count: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """`diagnostic_sums` over a random subset of ``count`` target positions of a loss's inputs.

    The sampled rows are projected in chunks as large as the loss's own (`KDLossSpec.chunk_plan` with two
    buffers, so the diagnostics add no memory peak of their own: they run after the loss has freed its chunk),
    which keeps the GEMMs efficient; `diagnostic_sums` then walks each chunk in cache-sized blocks."""
    targets = targets.to(student.states.device)
    sampled = sample_rows(targets, count, generator)
    vocab = min(student.vocab_size, teacher.vocab_size)
    student = _detached(student)
    sums = empty_sums(student.states.device)
    step = KDLossSpec().chunk_plan(vocab, projected_buffers=2).rows
    for start in range(0, sampled.numel(), step):
        rows = sampled[start : start + step]
        student_logits = project_rows(student, rows, vocab)
        if isinstance(teacher, TeacherMixture):
            teacher_logits = teacher.chunk_logits(rows.to(teacher.device), vocab, 1.0)
        else:
            teacher_logits = project_rows(teacher, rows.to(teacher.states.device), vocab)
        teacher_logits = teacher_logits.to(student_logits.device)
        sums += diagnostic_sums(student_logits, teacher_logits, targets.index_select(0, rows))
        del student_logits, teacher_logits
    return sums


def _detached(source: LogitSource) -> LogitSource:
    def detach(tensor: Tensor | None) -> Tensor | None:
        return None if tensor is None else tensor.detach()

    return LogitSource(detach(source.states), detach(source.head_weight), detach(source.head_bias))
