"""Hidden-state distillation terms between (already projected) student states and teacher states.

Each term is a per-token distance, computed in float32 and SUMMED over the selected token positions,
so the trainer can divide every term once by the same token count as the logit loss. Per-token
distances:

* ``mse``: mean over the hidden dimension of ``(s - t)^2`` (width-independent scale).
* ``normalized_mse``: ``||s/|s| - t/|t|||^2``, the squared distance of unit vectors, in ``[0, 4]``.
* ``cosine``: ``1 - cos(s, t)``, in ``[0, 2]``.

The teacher is detached: it never receives gradients.
"""

from __future__ import annotations

from torch import Tensor

HIDDEN_LOSSES = ("mse", "normalized_mse", "cosine")
_NORM_EPS = 1e-12


def _select_tokens(states: Tensor, mask: Tensor | None) -> Tensor:
    """(B, S, D) -> (N, D) rows at ``mask``; all rows when ``mask`` is None."""
    if states.dim() != 3:
        raise ValueError(f"Hidden states must be (batch, seq, dim), got shape {tuple(states.shape)}.")
    if mask is None:
        return states.reshape(-1, states.shape[-1])
    if mask.shape != states.shape[:2]:
        raise ValueError(
            f"Mask shape {tuple(mask.shape)} does not match states' (batch, seq) {tuple(states.shape[:2])}."
        )
    return states[mask.bool()]


def hidden_state_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None, kind: str = "mse") -> Tensor:
    """Sum over selected tokens of the per-token distance ``kind`` between student and teacher states.

    ``student`` must already be projected to the teacher width. ``mask`` is a (batch, seq) boolean
    tensor of the positions to include (None: all).
    """
    if kind not in HIDDEN_LOSSES:
        raise ValueError(f"Unknown hidden-state loss {kind!r}; choose one of {', '.join(HIDDEN_LOSSES)}.")
    if student.shape != teacher.shape:
        raise ValueError(
            f"Student states {tuple(student.shape)} and teacher states {tuple(teacher.shape)} differ in shape; "
            "project the student to the teacher width first."
        )
    s = _select_tokens(student, mask).float()
    t = _select_tokens(teacher.detach(), mask).float()
    if kind == "mse":
        return (s - t).pow(2).mean(dim=-1).sum()
    s_unit = s / s.norm(dim=-1, keepdim=True).clamp_min(_NORM_EPS)
    t_unit = t / t.norm(dim=-1, keepdim=True).clamp_min(_NORM_EPS)
    if kind == "normalized_mse":
        return (s_unit - t_unit).pow(2).sum(dim=-1).sum()
    return (1.0 - (s_unit * t_unit).sum(dim=-1)).sum()
