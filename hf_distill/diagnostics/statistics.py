"""Teacher/student diagnostics of next-token distributions, as sums that add across batches and processes.

Why sums: a trainer samples positions in every micro-batch of a logging window and on every process; a vector of
sums can be added on the device (no host sync per step) and all-reduced once when the Trainer logs, and
`summarize` turns the total into means. Every statistic is at temperature 1 (the models' own distributions,
whatever temperature the loss uses):

* ``kl``: KL(teacher || student) in nats;
* ``top1_agreement``: share of positions where both argmaxes agree;
* ``top5_overlap``: |top-5(teacher) & top-5(student)| / 5;
* ``prob_correlation``: Pearson correlation of the two probability vectors of a position (over the vocabulary),
  averaged over positions (0 for a position where either distribution is exactly uniform);
* ``teacher_entropy_bits`` / ``student_entropy_bits``;
* ``teacher_ece`` / ``student_ece``: expected calibration error of the top-1 prediction against the label,
  with ``ECE_BINS`` equal-width confidence bins: sum over bins of |sum(correct) - sum(confidence)| / N, which is
  the usual sum_b (n_b / N) |accuracy_b - confidence_b|.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

ECE_BINS = 10
TOP_K = 5
# Rows per block so each float32 temporary is 1 MB: cache-sized on CPU, and no memory peak of its own.
BLOCK_ELEMENTS = 1 << 18
# Layout of the sums vector: count, then the per-position sums, then the signed calibration gaps per bin.
SCALAR_FIELDS = ("count", "kl", "agree", "top5", "correlation", "teacher_entropy", "student_entropy")
SUMS_LENGTH = len(SCALAR_FIELDS) + 2 * ECE_BINS
LOG_FLOOR = torch.finfo(torch.float32).min


def empty_sums(device: torch.device | str = "cpu") -> Tensor:
    """A zero sums vector (float64)."""
    return torch.zeros(SUMS_LENGTH, dtype=torch.float64, device=device)


def diagnostic_sums(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None = None) -> Tensor:
    """The float64 sums vector of (positions x vocab) logits; ``targets`` (positions,) enable the ECE terms.

    The elementwise work runs in float32, in row blocks of about ``BLOCK_ELEMENTS`` so its temporaries stay small
    whatever the vocabulary; every per-position value is accumulated in float64.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            f"logits must be matching (positions, vocab) tensors, got {tuple(student_logits.shape)} and "
            f"{tuple(teacher_logits.shape)}"
        )
    sums = empty_sums(student_logits.device)
    step = max(1, BLOCK_ELEMENTS // max(student_logits.shape[1], 1))
    for start in range(0, student_logits.shape[0], step):
        block = slice(start, start + step)
        sums += _block_sums(student_logits[block], teacher_logits[block], None if targets is None else targets[block])
    return sums


def _block_sums(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor | None) -> Tensor:
    sums = empty_sums(student_logits.device)
    log_q = torch.log_softmax(student_logits.float(), dim=-1)
    log_p = torch.log_softmax(teacher_logits.float().to(student_logits.device), dim=-1)
    q, p = log_q.exp(), log_p.exp()
    # 0 * log 0 = 0: a masked (-inf) logit has probability 0, and its log clamped to the lowest finite float
    # makes the product 0 without a mask pass (NaN stays NaN). Finite logs are never clamped, so no other term
    # changes; a student -inf where the teacher has mass gives a KL of about p * 3.4e38 instead of inf.
    log_p.clamp_min_(LOG_FLOOR)
    log_q.clamp_min_(LOG_FLOOR)
    sums[0] = student_logits.shape[0]
    sums[5] = -(p * log_p).sum(-1).double().sum() / math.log(2)
    sums[6] = -(q * log_q).sum(-1).double().sum() / math.log(2)
    sums[1] = (p * log_p.sub_(log_q)).sum(-1).double().sum()  # log_p becomes log(p / q)
    # One top-k per side gives the top-5 sets and, in its first column, the argmax and its probability.
    k = min(TOP_K, p.shape[-1])
    t_conf, t_top = p.topk(k, dim=-1)
    s_conf, s_top = q.topk(k, dim=-1)
    sums[2] = (s_top[:, 0] == t_top[:, 0]).sum()
    sums[3] = ((t_top.unsqueeze(2) == s_top.unsqueeze(1)).any(2).sum(-1).double() / k).sum()
    sums[4] = _row_correlation(p, q).sum()
    if targets is not None:
        targets = targets.to(student_logits.device)
        offset = len(SCALAR_FIELDS)
        sums[offset : offset + ECE_BINS] = _calibration_gaps(t_conf[:, 0], t_top[:, 0] == targets)
        sums[offset + ECE_BINS :] = _calibration_gaps(s_conf[:, 0], s_top[:, 0] == targets)
    return sums


def _row_correlation(p: Tensor, q: Tensor) -> Tensor:
    """Pearson correlation of each row of ``p`` with the same row of ``q`` (float64 per row)."""
    dp = p - p.mean(-1, keepdim=True)
    dq = q - q.mean(-1, keepdim=True)
    cov = (dp * dq).sum(-1).double()
    scale = ((dp * dp).sum(-1).double() * (dq * dq).sum(-1).double()).sqrt()
    return torch.where(scale > 0, cov / scale.clamp_min(1e-300), torch.zeros_like(cov))


def _calibration_gaps(confidence: Tensor, correct: Tensor) -> Tensor:
    """Per confidence bin, sum(correct) - sum(confidence) (float64)."""
    bins = (confidence.double() * ECE_BINS).long().clamp(0, ECE_BINS - 1)
    gaps = torch.zeros(ECE_BINS, dtype=torch.float64, device=confidence.device)
    return gaps.index_add_(0, bins, correct.double() - confidence.double())


def summarize(sums: Tensor | list[float], with_calibration: bool = True) -> dict[str, float]:
    """Means of a (summed) sums vector; empty dict when it counts no position."""
    values = [float(v) for v in (sums.tolist() if isinstance(sums, Tensor) else sums)]
    count = values[0]
    if count <= 0:
        return {}
    result = {
        "kl": values[1] / count,
        "top1_agreement": values[2] / count,
        "top5_overlap": values[3] / count,
        "prob_correlation": values[4] / count,
        "teacher_entropy_bits": values[5] / count,
        "student_entropy_bits": values[6] / count,
    }
    if with_calibration:
        offset = len(SCALAR_FIELDS)
        result["teacher_ece"] = sum(abs(v) for v in values[offset : offset + ECE_BINS]) / count
        result["student_ece"] = sum(abs(v) for v in values[offset + ECE_BINS :]) / count
    return result
