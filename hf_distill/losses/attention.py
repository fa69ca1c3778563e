"""Attention-map distillation: KL(teacher attention row || student attention row), per query position.

Inputs are attention probabilities (batch, heads, query, key) as returned by eager attention. When the
head counts differ the teacher is brought to the student's head count first:

* teacher heads a multiple of student heads: average contiguous groups of ``H_t / H_s`` teacher heads.
  Contiguous groups follow the grouped-query-attention layout (query heads ``k*r .. k*r + r - 1`` share
  key/value head ``k``), so with ``H_s == num_key_value_heads`` of the teacher each group is exactly one
  teacher KV group;
* student heads a multiple of teacher heads: each teacher head is the target of its ``H_s / H_t``
  contiguous student heads;
* ``head_reduction="mean"``: average all heads on both sides (one map per layer), for any head counts.

Per query row the KL is averaged over heads; rows are SUMMED over the selected query positions (float32).
Keys that both models mask out (future tokens, padding) have probability 0 and contribute nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor

HEAD_REDUCTIONS = ("group", "mean")
# Smallest positive float32: keeps log(p_student) finite where the student underflowed to 0.
_TINY = torch.finfo(torch.float32).tiny


def match_head_counts(student: Tensor, teacher: Tensor, head_reduction: str = "group") -> tuple[Tensor, Tensor]:
    """Return (student, teacher) attention maps with equal head counts (see module docstring)."""
    if head_reduction not in HEAD_REDUCTIONS:
        raise ValueError(f"Unknown head_reduction {head_reduction!r}; choose one of {', '.join(HEAD_REDUCTIONS)}.")
    if student.dim() != 4 or teacher.dim() != 4:
        raise ValueError(
            f"Attention maps must be (batch, heads, query, key); got student {tuple(student.shape)}, "
            f"teacher {tuple(teacher.shape)}."
        )
    if head_reduction == "mean":
        return student.mean(dim=1, keepdim=True), teacher.mean(dim=1, keepdim=True)
    h_s, h_t = student.shape[1], teacher.shape[1]
    if h_t == h_s:
        return student, teacher
    batch, _, q_len, k_len = teacher.shape
    if h_t % h_s == 0:
        return student, teacher.reshape(batch, h_s, h_t // h_s, q_len, k_len).mean(dim=2)
    if h_s % h_t == 0:
        return student, teacher.repeat_interleave(h_s // h_t, dim=1)
    raise ValueError(
        f"Cannot group {h_t} teacher heads onto {h_s} student heads (neither count divides the other); "
        "use head_reduction='mean' (feature_attention_head_reduction) to average all heads."
    )


def attention_kl_loss(
    student: Tensor, teacher: Tensor, mask: Tensor | None = None, head_reduction: str = "group"
) -> Tensor:
    """Sum over selected query positions of the head-averaged KL(teacher row || student row).

    ``mask`` is a (batch, query) boolean tensor of the query positions to include (None: all).
    """
    if student.shape[0] != teacher.shape[0] or student.shape[2:] != teacher.shape[2:]:
        raise ValueError(
            f"Student attention {tuple(student.shape)} and teacher attention {tuple(teacher.shape)} must agree on "
            "batch, query and key sizes."
        )
    student, teacher = match_head_counts(student, teacher.detach(), head_reduction)
    # (B, H, Q, K) -> (B, Q, H, K) so the query mask selects rows directly.
    s = student.transpose(1, 2)
    t = teacher.transpose(1, 2)
    if mask is not None:
        if mask.shape != s.shape[:2]:
            raise ValueError(f"Mask shape {tuple(mask.shape)} does not match (batch, query) {tuple(s.shape[:2])}.")
        s, t = s[mask.bool()], t[mask.bool()]
    s = s.float()
    t = t.float()
    kl_rows = (torch.xlogy(t, t) - t * torch.log(s.clamp_min(_TINY))).sum(dim=-1)
    return kl_rows.mean(dim=-1).sum()
