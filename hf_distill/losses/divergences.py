"""Row-wise divergences between a teacher and a student next-token distribution.

Every function here works on one chunk of rows at a time, in float32, and returns both the per-row value
and the gradient of that value with respect to the *temperature-scaled* student logits. Returning the
gradient in closed form is what lets the chunked losses free each chunk's (rows x vocab) temporaries
before the next chunk starts, instead of keeping them alive for autograd.

Conventions: ``s`` are student logits divided by the temperature, ``t`` the teacher's; ``log_q`` and
``log_p`` their log-softmax; ``q`` and ``p`` the probabilities. All divergences are >= 0 and 0 when the
two distributions coincide.

Masked vocabulary: a teacher logit of ``-inf`` means probability 0, and the divergences whose value stays
finite there treat it so (``p log p`` is 0 at ``p = 0``): ``forward_kl``, ``jsd`` with ``beta < 1``,
``skew_forward_kl``, ``skew_reverse_kl`` with ``skew > 0``, ``tvd`` and ``mse``. The others have no finite
value: reverse KL (and ``jsd`` at ``beta = 1``, ``skew_reverse_kl`` at ``skew = 0``) is infinite because a
student with finite logits gives every token some mass, and ``cosine`` compares the logits themselves. For
those, ``handles_zero_teacher_probability`` is False and the chunked loss refuses such a teacher with an error
that says so. NaN and ``+inf`` teacher logits are always errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .settings import require_in_range

DIVERGENCES: tuple[str, ...] = (
    "forward_kl",
    "reverse_kl",
    "jsd",
    "tvd",
    "skew_forward_kl",
    "skew_reverse_kl",
    "mse",
    "cosine",
)


@dataclass(frozen=True)
class DivergenceParams:
    """Shape parameters of the divergences that have one.

    ``beta`` is the generalized-JSD mixing weight (0 gives forward KL, 1 reverse KL, 0.5 the symmetric
    JSD); ``skew`` is the mixing weight of the skew KL variants (0 gives the plain KL).
    """

    beta: float = 0.5
    skew: float = 0.1


# Stands in for log(0) once a probability of 0 has been formed: exp() of it is exactly 0, yet p * (log p - x)
# is 0 * finite = 0 instead of 0 * -inf = NaN, and it leaves room for the additions below without overflow.
LOG_ZERO = -1e30


def handles_zero_teacher_probability(name: str, params: DivergenceParams) -> bool:
    """Whether the divergence has a finite value when the teacher gives some tokens probability 0."""
    if name in ("reverse_kl", "cosine"):
        return False
    if name == "jsd":
        return params.beta < 1.0
    if name == "skew_reverse_kl":
        return params.skew > 0.0
    return True


def _teacher_log_probs(t: Tensor) -> Tensor:
    """log_softmax of teacher logits with log(0) (a -inf logit) floored to `LOG_ZERO`; NaN stays NaN."""
    return t.log_softmax(-1).clamp_min_(LOG_ZERO)


@dataclass
class RowTerms:
    """Per-row divergence values and, when requested, d(value)/d(s) for each row."""

    values: Tensor
    grad_s: Tensor | None


def _through_softmax(q: Tensor, grad_q: Tensor) -> Tensor:
    """Chain a gradient w.r.t. probabilities q = softmax(s) back to the logits s."""
    return q * (grad_q - (q * grad_q).sum(-1, keepdim=True))


def _forward_kl(s: Tensor, t: Tensor, params: DivergenceParams, need_grad: bool) -> RowTerms:
    # The most used divergence, written in place on its inputs (the caller hands them over, see
    # `divergence_rows`): with the transient of logsumexp, four (rows x vocab) buffers at most.
    log_p = t.sub_(t.logsumexp(-1, keepdim=True)).clamp_min_(LOG_ZERO)
    p = log_p.exp()
    log_q = s.sub_(s.logsumexp(-1, keepdim=True))
    values = log_p.sub_(log_q).mul_(p).sum(-1)
    return RowTerms(values, log_q.exp_().sub_(p) if need_grad else None)


def _reverse_kl(s: Tensor, t: Tensor, params: DivergenceParams, need_grad: bool) -> RowTerms:
    log_q, log_p = s.log_softmax(-1), t.log_softmax(-1)
    q = log_q.exp()
    ratio = log_q - log_p
    values = (q * ratio).sum(-1)
    grad = q * (ratio - values.unsqueeze(-1)) if need_grad else None
    return RowTerms(values, grad)


def _jsd(s: Tensor, t: Tensor, params: DivergenceParams, need_grad: bool) -> RowTerms:
    beta = params.beta
    if beta == 0.0:
        return _forward_kl(s, t, params, need_grad)
    if beta == 1.0:
        return _reverse_kl(s, t, params, need_grad)
    log_q, log_p = s.log_softmax(-1), _teacher_log_probs(t)
    q, p = log_q.exp(), log_p.exp()
    # m = beta * p + (1 - beta) * q, formed in log space so that tiny probabilities keep their precision.
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
    student_side = log_q - log_m
    values = beta * (p * (log_p - log_m)).sum(-1) + (1.0 - beta) * (q * student_side).sum(-1)
    grad = None
    if need_grad:
        # d/dq_j of the JSD collapses to (1 - beta) * (log q_j - log m_j); the constant terms cancel.
        grad = _through_softmax(q, (1.0 - beta) * student_side)
    return RowTerms(values, grad)


def _skew_forward_kl(s: Tensor, t: Tensor, params: DivergenceParams, need_grad: bool) -> RowTerms:
    lam = params.skew
    if lam == 0.0:
        return _forward_kl(s, t, params, need_grad)
    log_q, log_p = s.log_softmax(-1), _teacher_log_probs(t)
    q, p = log_q.exp(), log_p.exp()
    log_m = torch.logaddexp(log_p + math.log(lam), log_q + math.log1p(-lam))
    values = (p * (log_p - log_m)).sum(-1)
    grad = None
    if need_grad:
        grad = _through_softmax(q, -(1.0 - lam) * torch.exp(log_p - log_m))
    return RowTerms(values, grad)


def _skew_reverse_kl(s: Tensor, t: Tensor, params: DivergenceParams, need_grad: bool) -> RowTerms:
    lam = params.skew
    if lam == 0.0:
        return _reverse_kl(s, t, params, need_grad)
    log_q, log_p = s.log_softmax(-1), t.log_softmax(-1)
    q = log_q.exp()
    log_m = torch.logaddexp(log_q + math.log(lam), log_p + math.log1p(-lam))
    values = (q * (log_q - log_m)).sum(-1)
    grad = None
    if need_grad:
        grad = _through_softmax(q, log_q - log_m - lam * torch.exp(log_q - log_m))
    return RowTerms(values, grad)


def _tvd(s: Tensor, t: Tensor, params: DivergenceParams, need_grad: bool) -> RowTerms:
    q, p = s.softmax(-1), t.softmax(-1)
    diff = q - p
    values = 0.5 * diff.abs().sum(-1)
    return RowTerms(values, _through_softmax(q, 0.5 * diff.sign()) if need_grad else None)


def _mse(s: Tensor, t: Tensor, params: DivergenceParams, need_grad: bool) -> RowTerms:
    q, p = s.softmax(-1), t.softmax(-1)
    diff = q - p
    values = diff.square().sum(-1)
    return RowTerms(values, _through_softmax(q, 2.0 * diff) if need_grad else None)


def _cosine(s: Tensor, t: Tensor, params: DivergenceParams, need_grad: bool) -> RowTerms:
    eps = 1e-12
    s_norm = s.norm(dim=-1).clamp_min(eps)
    t_norm = t.norm(dim=-1).clamp_min(eps)
    cos = (s * t).sum(-1) / (s_norm * t_norm)
    grad = None
    if need_grad:
        grad = -(t / (s_norm * t_norm).unsqueeze(-1) - (cos / s_norm.square()).unsqueeze(-1) * s)
    return RowTerms(1.0 - cos, grad)


_ROW_FUNCTIONS: dict[str, Callable[[Tensor, Tensor, DivergenceParams, bool], RowTerms]] = {
    "forward_kl": _forward_kl,
    "reverse_kl": _reverse_kl,
    "jsd": _jsd,
    "tvd": _tvd,
    "skew_forward_kl": _skew_forward_kl,
    "skew_reverse_kl": _skew_reverse_kl,
    "mse": _mse,
    "cosine": _cosine,
}


def check_divergence(name: str, params: DivergenceParams) -> None:
    """Raise a clear error for an unknown divergence or an out-of-range shape parameter."""
    if name not in _ROW_FUNCTIONS:
        raise ValueError(f"Unknown divergence {name!r}; choose one of {', '.join(DIVERGENCES)}.")
    require_in_range("jsd beta", params.beta, 0.0, 1.0)
    require_in_range("skew", params.skew, 0.0, 1.0, high_inclusive=False)


def divergence_rows(
    name: str,
    student_scaled: Tensor,
    teacher_scaled: Tensor,
    params: DivergenceParams | None = None,
    need_grad: bool = True,
    overwrite_inputs: bool = False,
) -> RowTerms:
    """Per-row divergence D(teacher || student) of float32 temperature-scaled logits, with d D / d s.

    With `overwrite_inputs` the function may reuse the two input buffers as scratch space (the chunked loss
    passes chunk copies it no longer needs); otherwise they are left untouched.
    """
    params = params or DivergenceParams()
    check_divergence(name, params)
    if not overwrite_inputs:
        student_scaled, teacher_scaled = student_scaled.clone(), teacher_scaled.clone()
    return _ROW_FUNCTIONS[name](student_scaled, teacher_scaled, params, need_grad)
