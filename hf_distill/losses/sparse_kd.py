"""Forward-KL distillation from a *sparse* teacher signal: precomputed top-k tokens or sampled tokens.

Both modes give, for every target position, a set of teacher token ids with weights ``w`` and are scored
against the student's *full* softmax ``q`` (temperature T), so the student's normaliser is never
truncated:

* **top-k (tail bucket).** ``w_i = p_i`` are the teacher probabilities of its k most likely tokens and
  ``r = 1 - sum_i p_i`` is the remaining "tail" mass. The teacher and student distributions are both
  coarsened to k + 1 outcomes (the k tokens plus one bucket holding every other token) and the loss is
  the exact KL between the coarsened distributions::

      KL_k = sum_i p_i (log p_i - log q_i) + r (log r - log q_tail),   q_tail = 1 - sum_i q_i

  With k = vocabulary size the bucket is empty (r = 0) and this *is* the dense forward KL. For k < V it
  is a lower bound of the dense KL (coarsening never increases a KL). The tail is credited to the student
  in proportion to its own probabilities, so its gradient is exact for this objective: ``W q - t`` with
  ``t_j = p_j`` on the k tokens and ``t_j = r q_j / q_tail`` elsewhere (``W`` = sum of stored mass).

* **sampled (Random-Sampling KD, Anshumann et al. 2025).** N tokens are drawn from the teacher
  distribution and stored as distinct ids with counts; ``w_i = count_i / N``. Since E[w_i] = p_i,
  ``-sum_i w_i log q_i`` is an unbiased estimate of the cross-entropy ``-sum_v p_v log q_v`` and its
  gradient ``q - w`` of the dense gradient ``q - p``. Subtracting the teacher entropy stored at capture
  time turns it into an unbiased estimate of the KL.

Temperature: the teacher signal is captured at one temperature and cannot be re-tempered without the
full logits, so the loss temperature must equal the capture temperature (else a ``ValueError``).

Like ``token_kd.py``: sums over valid causal positions, float32 chunks over tokens, and gradients formed
in closed form chunk by chunk so no (tokens x vocab) float32 tensor outlives its chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .chunk_grads import StudentGradients, combined_loss, pop_scaled_grads
from .precision import autocast_off, product_dtype
from .token_kd import IGNORE_INDEX, KDLossSpec, KDLossTerms, LogitSource, _project, causal_targets

SPARSE_MODES: tuple[str, ...] = ("topk", "sampled")


@dataclass
class SparseTeacherSignal:
    """A teacher's next-token signal on token positions (rows aligned with the student's logit rows).

    ``ids``/``weights`` are (tokens, m); ``weights`` are teacher probabilities (top-k) or normalised
    sample counts (sampled). ``tail_mass`` (tokens,) is the top-k remainder, None in sampled mode.
    ``entropy`` (tokens,) is the teacher entropy the KL statistic subtracts; ``temperature`` is the
    capture temperature.
    """

    ids: Tensor
    weights: Tensor
    tail_mass: Tensor | None
    entropy: Tensor
    temperature: float

    @property
    def num_tokens(self) -> int:
        return self.ids.shape[0]

    def select(self, rows: Tensor) -> SparseTeacherSignal:
        """The signal restricted to the given rows."""
        return SparseTeacherSignal(
            ids=self.ids.index_select(0, rows),
            weights=self.weights.index_select(0, rows),
            tail_mass=None if self.tail_mass is None else self.tail_mass.index_select(0, rows),
            entropy=self.entropy.index_select(0, rows),
            temperature=self.temperature,
        )


def topk_signal(ids: Tensor, logprobs: Tensor, tail_mass: Tensor, temperature: float) -> SparseTeacherSignal:
    """Top-k signal from stored ids, log-probabilities and tail mass (any leading shape, flattened)."""
    k = ids.shape[-1]
    if logprobs.shape != ids.shape or tail_mass.shape != ids.shape[:-1]:
        raise ValueError(
            f"top-k columns disagree in shape: ids {tuple(ids.shape)}, logprobs {tuple(logprobs.shape)}, "
            f"tail_mass {tuple(tail_mass.shape)} (expected tail_mass {tuple(ids.shape[:-1])})."
        )
    log_p = logprobs.reshape(-1, k).float()
    p = log_p.exp()
    r = tail_mass.reshape(-1).float()
    # Entropy of the coarsened (k tokens + tail bucket) teacher distribution, so KL_k = CE_k - H_k.
    entropy = -(p * log_p).sum(-1) - torch.xlogy(r, r)
    return SparseTeacherSignal(ids.reshape(-1, k).long(), p, r, entropy, float(temperature))


def sampled_signal(ids: Tensor, counts: Tensor, entropy: Tensor, temperature: float) -> SparseTeacherSignal:
    """Sampled signal from stored distinct ids, their counts (0 = padding slot) and teacher entropy."""
    m = ids.shape[-1]
    if counts.shape != ids.shape or entropy.shape != ids.shape[:-1]:
        raise ValueError(
            f"sampled columns disagree in shape: ids {tuple(ids.shape)}, counts {tuple(counts.shape)}, "
            f"entropy {tuple(entropy.shape)} (expected entropy {tuple(ids.shape[:-1])})."
        )
    c = counts.reshape(-1, m).float()
    total = c.sum(-1, keepdim=True)
    weights = c / total.clamp_min(1.0)
    flat_entropy = entropy.reshape(-1).float()
    return SparseTeacherSignal(ids.reshape(-1, m).long(), weights, None, flat_entropy, float(temperature))


def check_temperature(spec: KDLossSpec, capture_temperature: float) -> None:
    """Refuse a loss temperature that differs from the one the teacher signal was captured at."""
    if not math.isclose(spec.temperature, capture_temperature, rel_tol=1e-6, abs_tol=0.0):
        raise ValueError(
            f"The teacher signal was captured at temperature {capture_temperature} but the loss uses "
            f"temperature {spec.temperature}. Precomputed probabilities cannot be re-tempered without the "
            f"full logits: set the KD temperature to {capture_temperature} or rerun precompute with "
            f"temperature={spec.temperature}."
        )


# Below this much unnormalised student tail mass (relative to its top token) the fast path could lose
# precision to denormals, so the chunk is redone in log space.
_TINY_TAIL = 1e-20


@dataclass
class _ChunkTerms:
    kl_sum: Tensor
    hard_sum: Tensor
    agree: Tensor
    grad_z: Tensor | None


def _hard_terms(z: Tensor, lse_1: Tensor, hard_targets: Tensor) -> Tensor:
    return (lse_1 - z.gather(1, hard_targets).squeeze(1)).sum()


def _finish_grad(grad: Tensor, z: Tensor, lse_1: Tensor, hard_targets: Tensor, temperature: float, alpha: float):
    """Add the hard-label part (1 - alpha)(q_1 - onehot); q_1 is already in ``grad`` when T = 1."""
    if alpha < 1.0:
        if temperature != 1.0:
            grad.add_((z - lse_1.unsqueeze(1)).exp_(), alpha=1.0 - alpha)
        grad.scatter_add_(1, hard_targets, torch.full_like(hard_targets, alpha - 1.0, dtype=grad.dtype))
    return grad


def _chunk_terms(z, ids, w, tail, entropy, hard_targets, temperature, alpha, need_grad) -> _ChunkTerms:
    """KL and CE sums of one chunk of float32 student logits ``z``, and d(loss)/dz.

    One exponential serves the value, the tail bucket and the gradient: ``e = exp(s - max s)``; the tail
    mass is summed directly over the non-stored ids (no ``1 - sum`` cancellation).
    """
    s = z if temperature == 1.0 else z / temperature
    top_s, student_top1 = s.max(-1)
    e = (s - top_s.unsqueeze(1)).exp_()
    total = e.sum(-1)
    lse = top_s + total.log()
    cross_entropy = -(w * (s.gather(1, ids) - lse.unsqueeze(1))).sum(-1)
    mass = w.sum(-1)
    e_ids = e.gather(1, ids)
    tail_ratio = None
    if tail is not None:
        has_tail = tail > 0
        e.scatter_(1, ids, 0.0)
        tail_sum = e.sum(-1)
        if bool((has_tail & (tail_sum < _TINY_TAIL)).any()):
            return _chunk_terms_log_space(z, ids, w, tail, entropy, hard_targets, temperature, alpha, need_grad)
        cross_entropy = cross_entropy - torch.where(has_tail, tail * (tail_sum.log() - total.log()), 0.0)
        mass = mass + tail
        tail_ratio = torch.where(has_tail, tail / tail_sum.clamp_min(_TINY_TAIL), 0.0)
    teacher_top1 = ids.gather(1, w.argmax(-1, keepdim=True)).squeeze(1)
    lse_1 = lse if temperature == 1.0 else z.logsumexp(-1)
    terms = _ChunkTerms(
        kl_sum=(cross_entropy - entropy).sum(),
        hard_sum=_hard_terms(z, lse_1, hard_targets),
        agree=(student_top1 == teacher_top1).sum(),
        grad_z=None,
    )
    if not need_grad:
        return terms
    # d/dz [alpha T^2 KL_T + (1 - alpha) CE_1] = alpha T (W q_T - t) + (1 - alpha) (q_1 - onehot), with the
    # target t = w on stored ids and r q_j / q_tail on tail ids (W = total stored mass, 1 up to rounding).
    soft_scale = alpha * temperature
    hard_in_q = (1.0 - alpha) if temperature == 1.0 else 0.0
    inv_total = total.reciprocal()
    row = (soft_scale * mass + hard_in_q) * inv_total
    if tail_ratio is not None:
        row = row - soft_scale * tail_ratio
    grad = e.mul_(row.unsqueeze(1))
    q_ids = e_ids * inv_total.unsqueeze(1)
    if tail is not None:  # stored ids were zeroed in e: write their entries (top-k ids are distinct)
        at_ids = (soft_scale * mass + hard_in_q).unsqueeze(1) * q_ids - soft_scale * w
        grad.scatter_(1, ids, at_ids)
    else:  # sampled: padding slots repeat id 0 with weight 0, so accumulate
        grad.scatter_add_(1, ids, -soft_scale * w)
    terms.grad_z = _finish_grad(grad, z, lse_1, hard_targets, temperature, alpha)
    return terms


def _chunk_terms_log_space(z, ids, w, tail, entropy, hard_targets, temperature, alpha, need_grad) -> _ChunkTerms:
    """Same as ``_chunk_terms`` with the tail bucket in log space, for chunks with extreme student logits."""
    s = z if temperature == 1.0 else z / temperature
    lse = s.logsumexp(-1)
    outside = s.scatter(1, ids, float("-inf"))
    lse_tail = outside.logsumexp(-1)
    has_tail = tail > 0
    if bool((has_tail & torch.isinf(lse_tail)).any()):
        raise ValueError(
            "A position has tail_mass > 0 but its top-k ids cover the whole vocabulary; "
            "the precomputed columns are inconsistent."
        )
    cross_entropy = -(w * (s.gather(1, ids) - lse.unsqueeze(1))).sum(-1)
    cross_entropy = cross_entropy - torch.where(has_tail, tail * (lse_tail - lse), 0.0)
    mass = w.sum(-1) + tail
    teacher_top1 = ids.gather(1, w.argmax(-1, keepdim=True)).squeeze(1)
    lse_1 = lse if temperature == 1.0 else z.logsumexp(-1)
    terms = _ChunkTerms(
        kl_sum=(cross_entropy - entropy).sum(),
        hard_sum=_hard_terms(z, lse_1, hard_targets),
        agree=(z.argmax(-1) == teacher_top1).sum(),
        grad_z=None,
    )
    if not need_grad:
        return terms
    soft_scale = alpha * temperature
    hard_in_q = (1.0 - alpha) if temperature == 1.0 else 0.0
    grad = (s - lse.unsqueeze(1)).exp_().mul_((soft_scale * mass + hard_in_q).unsqueeze(1))
    grad.scatter_add_(1, ids, -soft_scale * w)
    safe_lse_tail = torch.where(has_tail, lse_tail, 0.0)
    grad.sub_(outside.sub_(safe_lse_tail.unsqueeze(1)).exp_().mul_((soft_scale * tail).unsqueeze(1)))
    terms.grad_z = _finish_grad(grad, z, lse_1, hard_targets, temperature, alpha)
    return terms


class _ChunkedSparseKD(torch.autograd.Function):
    """Chunked forward that also forms the gradient w.r.t. the student; backward only rescales it."""

    @staticmethod
    def forward(ctx, s_states, s_weight, s_bias, signal: SparseTeacherSignal, targets, rows, spec, vocab, dtype):
        temperature, alpha = spec.temperature, spec.alpha
        grads = StudentGradients(s_states, s_weight, s_bias, ctx.needs_input_grad[:3], vocab, dtype)
        need_any = grads.needed
        stats = torch.zeros(4, dtype=torch.float64, device=s_states.device)  # soft (= KL), hard, agree, kl
        plan = spec.chunk_plan(vocab, device_type=s_states.device.type)
        for start in range(0, rows.numel(), plan.rows):
            chunk = slice(start, start + plan.rows)
            chunk_rows = rows[chunk]
            # One projection per chunk, then cache-sized blocks; each block leaves its gradient in z.
            z = _project(s_states, grads.head, s_bias, chunk_rows, vocab)
            for block in plan.blocks(chunk_rows.numel()):
                part = slice(start + block.start, start + block.stop)
                terms = _chunk_terms(
                    z[block],
                    signal.ids[part],
                    signal.weights[part],
                    None if signal.tail_mass is None else signal.tail_mass[part],
                    signal.entropy[part],
                    targets[part].unsqueeze(1),
                    temperature,
                    alpha,
                    need_any,
                )
                stats[0] += terms.kl_sum
                stats[1] += terms.hard_sum
                stats[2] += terms.agree
                stats[3] += terms.kl_sum
                if terms.grad_z is not None:
                    z[block].copy_(terms.grad_z)
            if need_any:
                grads.add(z, chunk_rows)
            del z

        ctx.grads = grads.finish()
        loss = combined_loss(stats, alpha, temperature)
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats):
        return pop_scaled_grads(ctx, grad_loss, other_inputs=6)


def _check_signal(signal: SparseTeacherSignal, vocab: int) -> None:
    """Clear errors for signals that would otherwise give a silently wrong (or non-finite) loss."""
    for name, value in (("weights", signal.weights), ("tail_mass", signal.tail_mass), ("entropy", signal.entropy)):
        if value is not None and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise ValueError(f"The teacher signal's {name} contain {bad} NaN/Inf values on target positions.")
    if signal.ids.numel() and (int(signal.ids.min()) < 0 or int(signal.ids.max()) >= vocab):
        raise ValueError(
            f"Teacher token ids must lie in [0, {vocab}) (the shared vocabulary); got range "
            f"[{int(signal.ids.min())}, {int(signal.ids.max())}]. Was the signal captured with another tokenizer?"
        )
    mass = signal.weights.sum(-1) + (0.0 if signal.tail_mass is None else signal.tail_mass)
    if mass.numel() and float(mass.min()) <= 0:
        raise ValueError("A target position has no teacher mass (all weights/counts are zero).")
    if signal.tail_mass is not None and signal.tail_mass.numel():
        if float(signal.tail_mass.min()) < 0 or float(signal.tail_mass.max()) > 1:
            raise ValueError("tail_mass must lie in [0, 1].")


def sparse_kd_loss(
    student: LogitSource,
    signal: SparseTeacherSignal,
    targets: Tensor,
    spec: KDLossSpec,
    teacher_vocab_size: int | None = None,
) -> KDLossTerms:
    """Sparse-signal distillation loss summed over positions whose target is not -100.

    ``targets`` (tokens,) and ``signal`` rows are aligned with the student's rows (``causal_targets``).
    Only ``forward_kl`` is supported: top-k and sampled signals estimate a forward KL. The student's
    vocabulary is cut to ``teacher_vocab_size`` (padding rows), as the dense loss does.
    """
    if spec.divergence != "forward_kl":
        raise ValueError(
            f"A precomputed (top-k or sampled) teacher signal supports divergence='forward_kl' only, "
            f"got {spec.divergence!r}."
        )
    check_temperature(spec, signal.temperature)
    if signal.num_tokens != student.num_tokens or targets.numel() != student.num_tokens:
        raise ValueError(
            f"Student ({student.num_tokens}), teacher signal ({signal.num_tokens}) and targets "
            f"({targets.numel()}) must cover the same number of token positions."
        )
    vocab = student.vocab_size if teacher_vocab_size is None else min(student.vocab_size, teacher_vocab_size)
    device = student.states.device
    targets = targets.to(device)
    rows = torch.nonzero(targets != IGNORE_INDEX).squeeze(1)
    picked = SparseTeacherSignal(
        ids=signal.ids.to(device),
        weights=signal.weights.to(device),
        tail_mass=None if signal.tail_mass is None else signal.tail_mass.to(device),
        entropy=signal.entropy.to(device),
        temperature=signal.temperature,
    ).select(rows)
    _check_signal(picked, vocab)
    row_targets = targets.index_select(0, rows)
    if rows.numel() and int(row_targets.max()) >= vocab:
        raise ValueError(f"A target token id is >= the shared vocabulary size {vocab}.")
    dtype = product_dtype(spec.precision, student.states, student.head_weight)
    with autocast_off(device):
        loss, stats = _ChunkedSparseKD.apply(
            student.states, student.head_weight, student.head_bias, picked, row_targets, rows, spec, vocab, dtype
        )
    return KDLossTerms.from_stats(loss, stats, rows.numel())


def sparse_kd_loss_from_logits(
    student_logits: Tensor,
    labels: Tensor,
    signal: SparseTeacherSignal,
    spec: KDLossSpec,
    teacher_vocab_size: int | None = None,
) -> KDLossTerms:
    """Convenience form for (batch, seq, vocab) logits, unshifted (batch, seq) labels and a signal whose
    rows are the flattened (batch, seq) positions (position i holds the teacher's prediction of i + 1)."""
    return sparse_kd_loss(
        LogitSource(student_logits.reshape(-1, student_logits.shape[-1])),
        signal,
        causal_targets(labels),
        spec,
        teacher_vocab_size,
    )
