"""Distillation between models with different vocabularies, over aligned groups of tokens.

Two terms, both sums over aligned groups (see ``hf_distill.crosstok``) and scaled by ``T^2`` like
the same-vocabulary soft term:

* **ULD** (Universal Logit Distillation): token identities do not match across vocabularies, but
  the *shapes* of the next-token distributions can be compared: sort each side's probabilities in
  descending order, pad the smaller vocabulary with zeros, and take the L1 distance (optionally
  over the top-k ranks only). Each side's realized first token carries the probability of the whole
  group (chain product of its tokens' conditionals), because that is the probability of the same
  text event on both sides even when the groups have different numbers of tokens.
* **Exact match**: for token pairs with identical text in both vocabularies, KL(teacher||student)
  between both sides' distributions renormalised over the shared tokens. Renormalising keeps the
  term finite whatever mass either side puts on tokens the other vocabulary lacks.

Memory: groups are processed in chunks, and each chunk computes its gradient in closed form and
frees its (chunk x vocab) temporaries, so autograd never holds float32 copies of the whole batch. The student
can be given as hidden states plus its ``lm_head`` (a ``LogitSource``): then only the rows the loss reads are
projected, a chunk at a time, and the student's full logits are never formed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..crosstok.batch import CrossTokenAlignment, TokenChain
from .chunk_grads import StudentGradients, pop_scaled_grads
from .precision import autocast_off, check_precision, product_dtype
from .settings import require_non_negative, require_positive
from .token_kd import LogitSource, _project

_NON_FINITE_TEACHER = (
    "Teacher logits contain NaN/Inf on aligned positions; check the teacher's dtype (fp16 overflow). A masked "
    "teacher vocabulary (logits of -inf) is not supported by the cross-tokenizer loss."
)
# float32 elements per (chunk x vocab) temporary.
DEFAULT_CHUNK_ELEMENTS = 1 << 23


@dataclass(frozen=True)
class CrossVocabLossSpec:
    """Weights and settings of the cross-vocabulary soft term."""

    temperature: float = 1.0
    uld_weight: float = 1.0
    exact_weight: float = 0.0
    top_k: int | None = None
    chunk_size: int | None = None
    precision: str = "auto"  # dtype of the student's lm_head products; see `precision.py`

    def __post_init__(self) -> None:
        check_precision(self.precision)
        require_positive("temperature", self.temperature)
        require_non_negative("uld_weight", self.uld_weight)
        require_non_negative("exact_match_weight", self.exact_weight)
        if self.uld_weight + self.exact_weight == 0:
            raise ValueError(
                f"uld_weight and exact_weight must be >= 0 and not both 0, got {self.uld_weight}, {self.exact_weight}."
            )
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None (all ranks), got {self.top_k}.")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None (automatic), got {self.chunk_size}.")

    def rows_per_chunk(self, vocab_size: int) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        return max(8, DEFAULT_CHUNK_ELEMENTS // max(vocab_size, 1))


@dataclass
class CrossVocabLossTerms:
    """``loss`` = T^2 * (uld_weight * uld_sum + exact_weight * exact_sum); sums are detached, for logging."""

    loss: Tensor
    uld_sum: Tensor
    exact_sum: Tensor
    num_groups: int
    student_top1: Tensor | None = None  # the student's argmax at each group's row (for agreement metrics)


def cross_vocab_loss(
    student: Tensor | LogitSource,
    teacher_logits: Tensor,
    alignment: CrossTokenAlignment,
    spec: CrossVocabLossSpec,
    shared_pairs: tuple[Tensor, Tensor] | None = None,
) -> CrossVocabLossTerms:
    """Cross-vocabulary soft loss summed over the aligned groups of a batch.

    ``student`` is (Ns, Vs) logits or a ``LogitSource`` (hidden states plus ``lm_head``); ``teacher_logits``
    (Nt, Vt). Rows are flattened positions indexed by ``alignment``; ``shared_pairs`` = (student_ids,
    teacher_ids) of identical-text tokens is required when ``spec.exact_weight > 0``. Only the student
    receives gradients.
    """
    if not isinstance(student, LogitSource):
        if student.dim() != 2:
            raise ValueError(f"student_logits must be 2-D (rows, vocab), got shape {tuple(student.shape)}.")
        student = LogitSource(student)
    _check_inputs(student, teacher_logits, alignment, spec, shared_pairs)
    device = student.states.device
    alignment = alignment.to(device)
    teacher_logits = teacher_logits.detach().to(device)
    if shared_pairs is not None:
        shared_pairs = (shared_pairs[0].to(device), shared_pairs[1].to(device))
    dtype = product_dtype(spec.precision, student.states, student.head_weight)
    with autocast_off(device):
        loss, sums, student_top1 = _CrossVocabLoss.apply(
            student.states, student.head_weight, student.head_bias, teacher_logits, alignment, spec, shared_pairs, dtype
        )
    return CrossVocabLossTerms(
        loss=loss, uld_sum=sums[0], exact_sum=sums[1], num_groups=alignment.num_groups, student_top1=student_top1
    )


def _check_inputs(student: LogitSource, teacher_logits, alignment, spec, shared_pairs) -> None:
    if teacher_logits.dim() != 2:
        raise ValueError(f"teacher_logits must be 2-D (rows, vocab), got shape {tuple(teacher_logits.shape)}.")
    s_rows, s_vocab = student.num_tokens, student.vocab_size
    checks = (
        ("student row", alignment.student_row, s_rows),
        ("teacher row", alignment.teacher_row, teacher_logits.shape[0]),
        ("student chain row", alignment.student_chain.row, s_rows),
        ("teacher chain row", alignment.teacher_chain.row, teacher_logits.shape[0]),
        ("student token id", alignment.student_first_token, s_vocab),
        ("teacher token id", alignment.teacher_first_token, teacher_logits.shape[1]),
        ("student chain token id", alignment.student_chain.token, s_vocab),
        ("teacher chain token id", alignment.teacher_chain.token, teacher_logits.shape[1]),
    )
    for name, index, size in checks:
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= size):
            raise ValueError(f"A {name} is outside [0, {size}); the alignment does not match these logits.")
    if spec.exact_weight > 0:
        if shared_pairs is None:
            raise ValueError("exact_weight > 0 needs shared_pairs (see hf_distill.crosstok.shared_vocab_pairs).")
        s_ids, t_ids = shared_pairs
        if s_ids.shape != t_ids.shape or s_ids.dim() != 1 or s_ids.numel() == 0:
            raise ValueError("shared_pairs must be two non-empty 1-D tensors of equal length.")
        if int(s_ids.max()) >= s_vocab or int(t_ids.max()) >= teacher_logits.shape[1]:
            raise ValueError("shared_pairs hold token ids beyond the logits' vocabulary sizes.")
        if s_ids.unique().numel() != s_ids.numel() or t_ids.unique().numel() != t_ids.numel():
            raise ValueError("shared_pairs must pair each token id at most once on each side.")


RowLogits = Callable[[Tensor], Tensor]  # row indices -> a fresh float32 (rows x vocab) tensor


def _chain_log_probs(row_logits: RowLogits, chain: TokenChain, num_groups: int, temperature: float, step: int):
    """Per group, the summed log-probabilities of its continuation tokens (0 for one-token groups)."""
    total = torch.zeros(num_groups, dtype=torch.float32, device=chain.row.device)
    for start in range(0, chain.row.numel(), step):
        rows = chain.row[start : start + step]
        z = row_logits(rows).div_(temperature)
        picked = z.gather(1, chain.token[start : start + step, None]).squeeze(1) - z.logsumexp(-1)
        total.index_add_(0, chain.group[start : start + step], picked)
    return total


def _merged_probs(z: Tensor, first: Tensor, continuation: Tensor) -> tuple[Tensor, Tensor]:
    """Probabilities with the realized first token's entry replaced by the whole group's probability."""
    log_q = z.log_softmax(-1)
    merged = log_q.exp()
    merged.scatter_(1, first[:, None], (log_q.gather(1, first[:, None]).squeeze(1) + continuation).exp()[:, None])
    return merged, log_q


def _top_and_tail(probs: Tensor, keep: int, shared: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The ``shared`` largest entries (descending, with indices), and the entries ranked ``shared..keep``:
    their sum and a mask of where they are. Ranks past ``shared`` only meet the other side's zero
    padding, so their order is irrelevant and a full sort of a large vocabulary is avoided."""
    vocab = probs.shape[1]
    if keep < vocab and keep > shared:
        values, index = probs.topk(keep, dim=-1)
        tail_mask = torch.zeros_like(probs, dtype=torch.bool).scatter_(1, index[:, shared:], True)
        return values[:, :shared], index[:, :shared], values[:, shared:].sum(-1), tail_mask
    if shared == vocab:
        values, index = probs.sort(dim=-1, descending=True)
    else:
        values, index = probs.topk(shared, dim=-1)
    tail_mask = torch.zeros_like(probs, dtype=torch.bool)
    if keep > shared:  # keep == vocab: everything outside the top ranks
        tail_mask.fill_(True).scatter_(1, index, False)
    tail = torch.where(tail_mask, probs, torch.zeros_like(probs)).sum(-1)
    return values, index, tail, tail_mask


def _uld_rows(student_merged: Tensor, teacher_merged: Tensor, top_k: int | None) -> tuple[Tensor, Tensor]:
    """Per-row L1 between rank-sorted vectors (zero-padded) and its gradient w.r.t. the student entries."""
    keep_s, keep_t = student_merged.shape[1], teacher_merged.shape[1]
    if top_k is not None:
        keep_s, keep_t = min(top_k, keep_s), min(top_k, keep_t)
    shared = min(keep_s, keep_t)
    s_top, s_index, s_tail, s_tail_mask = _top_and_tail(student_merged, keep_s, shared)
    t_top, _, t_tail, _ = _top_and_tail(teacher_merged, keep_t, shared)
    diff = s_top - t_top
    values = diff.abs().sum(-1) + s_tail + t_tail
    # Ranks the teacher lacks compare with 0: d|p - 0|/dp = 1.
    grad = s_tail_mask.to(student_merged.dtype).scatter_(1, s_index, diff.sign())
    return values, grad


def _exact_rows(z: Tensor, teacher_z: Tensor, pairs: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Per-row KL(teacher||student) over the shared tokens, each side renormalised over them, and its
    gradient w.r.t. the student's tempered logits (``p_s - p_t`` on shared ids, 0 elsewhere)."""
    s_ids, t_ids = pairs
    s_log = z[:, s_ids].log_softmax(-1)
    t_log = teacher_z[:, t_ids].log_softmax(-1)
    t_p = t_log.exp()
    values = (t_p * (t_log - s_log)).sum(-1)
    grad = torch.zeros_like(z)
    grad[:, s_ids] = s_log.exp() - t_p
    return values, grad


class _CrossVocabLoss(torch.autograd.Function):
    """Chunked forward that also produces the student's input gradients; backward only rescales them."""

    @staticmethod
    def forward(
        ctx, s_states, s_weight, s_bias, teacher_logits, alignment: CrossTokenAlignment, spec, shared_pairs, dtype
    ):
        temperature = spec.temperature
        num_groups = alignment.num_groups
        s_vocab = s_states.shape[1] if s_weight is None else s_weight.shape[0]
        # Gradients go straight to the student's inputs: logits (one buffer in their own dtype, what autograd
        # would hold for them anyway), or hidden states and lm_head weight, whose logits are never formed whole.
        grads = StudentGradients(s_states, s_weight, s_bias, ctx.needs_input_grad[:3], s_vocab, dtype)
        need_grad = grads.needed
        step = spec.rows_per_chunk(max(s_vocab, teacher_logits.shape[1]))
        device = s_states.device

        def student_rows(rows: Tensor) -> Tensor:
            return _project(s_states, grads.head, s_bias, rows, s_vocab)

        def teacher_rows(rows: Tensor) -> Tensor:
            return teacher_logits.index_select(0, rows).float()

        s_cont = _chain_log_probs(student_rows, alignment.student_chain, num_groups, temperature, step)
        t_cont = _chain_log_probs(teacher_rows, alignment.teacher_chain, num_groups, temperature, step)
        if not torch.isfinite(t_cont).all():
            raise ValueError(_NON_FINITE_TEACHER)

        cont_coeff = torch.zeros(num_groups, dtype=torch.float32, device=device)
        sums = torch.zeros(2, dtype=torch.float64, device=device)
        student_top1 = torch.zeros(num_groups, dtype=torch.long, device=device)
        for start in range(0, num_groups, step):
            chunk = slice(start, start + step)
            s_rows, t_rows = alignment.student_row[chunk], alignment.teacher_row[chunk]
            s_first, t_first = alignment.student_first_token[chunk], alignment.teacher_first_token[chunk]
            tz = teacher_rows(t_rows).div_(temperature)
            if not torch.isfinite(tz).all():
                raise ValueError(_NON_FINITE_TEACHER)
            z = student_rows(s_rows).div_(temperature)
            student_top1[chunk] = z.argmax(-1)
            s_merged, log_q = _merged_probs(z, s_first, s_cont[chunk])
            t_merged, _ = _merged_probs(tz, t_first, t_cont[chunk])
            grad_z = torch.zeros_like(z)
            if spec.uld_weight > 0:
                values, grad_m = _uld_rows(s_merged, t_merged, spec.top_k)
                sums[0] += values.sum()
                # m_j = q_j except m_f = q_f * exp(cont): dL/dz = w - q * sum(w) with w = g * m.
                weighted = grad_m.mul_(s_merged)
                grad_z.add_(weighted - log_q.exp() * weighted.sum(-1, keepdim=True), alpha=spec.uld_weight)
                cont_coeff[chunk] = spec.uld_weight * weighted.gather(1, s_first[:, None]).squeeze(1)
                del weighted, grad_m
            del s_merged, t_merged
            if spec.exact_weight > 0:
                values, grad_exact = _exact_rows(z, tz, shared_pairs)
                sums[1] += values.sum()
                grad_z.add_(grad_exact, alpha=spec.exact_weight)
                del grad_exact
            del log_q, tz, z
            if need_grad:
                # Tempered logits are z / T and the loss carries T^2: net factor T on the gradient.
                grads.add(grad_z.mul_(temperature), s_rows)
        if need_grad and spec.uld_weight > 0:
            _add_chain_grad(grads, student_rows, alignment.student_chain, cont_coeff, temperature, step)

        ctx.grads = grads.finish()
        loss = (temperature**2 * (spec.uld_weight * sums[0] + spec.exact_weight * sums[1])).float()
        ctx.mark_non_differentiable(sums, student_top1)
        return loss, sums.float(), student_top1

    @staticmethod
    def backward(ctx, grad_loss, _grad_sums, _grad_top1):
        return pop_scaled_grads(ctx, grad_loss, other_inputs=5)


def _add_chain_grad(
    grads: StudentGradients, row_logits: RowLogits, chain: TokenChain, coeff: Tensor, temperature: float, step: int
) -> None:
    """Continuation rows enter the loss through log p(token): gradient coeff * (onehot - q), times T."""
    for start in range(0, chain.row.numel(), step):
        rows = chain.row[start : start + step]
        q = row_logits(rows).div_(temperature).softmax(-1)
        c = coeff.index_select(0, chain.group[start : start + step])[:, None]
        row_grad = q.mul_(-c)
        row_grad.scatter_add_(1, chain.token[start : start + step, None], c)
        grads.add(row_grad.mul_(temperature), rows)
