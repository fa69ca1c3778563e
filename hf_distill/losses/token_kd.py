"""Token-level distillation loss, evaluated in chunks of tokens so memory stays bounded.

The loss of one batch is ``alpha * T^2 * sum D(p_T || q_S) + (1 - alpha) * sum CE`` over the valid target
positions, returned as a *sum*: the trainer divides once by the number of target tokens in the whole
(accumulated, multi-process) batch.

Why a custom autograd function: with plain autograd, every chunk's float32 (tokens x vocab) temporaries
stay alive until backward, so chunking would save nothing. Here each chunk computes its value and its
gradient in closed form (see ``divergences.py``), keeps only the gradient it owes its inputs, and frees
the rest. With a ``LogitSource`` that carries hidden states plus the ``lm_head`` weight, student logits
are never formed for more than one chunk at a time: the "fused" form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .chunk_grads import StudentGradients, combined_loss, pop_scaled_grads
from .divergences import LOG_ZERO, DivergenceParams, check_divergence, divergence_rows
from .nonfinite import non_finite_loss_error
from .precision import autocast_off, check_precision, product_dtype, product_weight
from .settings import require_in_range, require_positive

IGNORE_INDEX = -100
# The dense and sparse losses project a chunk once (one or two buffers, 256 MB in all) and then work through
# it in row blocks. The large chunk keeps the lm_head matmuls efficient (a GEMM with few rows runs far below
# peak on CPUs); on CPU, 4 MB blocks keep every elementwise temporary in cache. Accelerators have no cache
# to fit, and pay a kernel launch per operation per block, so they take 64 MB blocks. See BENCHMARKS.md.
PROJECTED_CHUNK_ELEMENTS = 1 << 26
BLOCK_ELEMENTS = 1 << 20
ACCELERATOR_BLOCK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class KDLossSpec:
    """What to compute: the divergence, its temperature, and the soft/hard weighting."""

    divergence: str = "forward_kl"
    temperature: float = 1.0
    alpha: float = 0.5
    beta: float = 0.5
    skew: float = 0.1
    # Rows whose logits are projected at once (see `chunk_plan`); None chooses from the vocabulary size.
    chunk_size: int | None = None
    # Top-1 agreement, the KL metric and the CE value when alpha == 1 cost extra passes over each chunk.
    with_metrics: bool = True
    # dtype of the lm_head products: "auto" (the run's compute dtype) or "float32"; see `precision.py`.
    precision: str = "auto"

    def __post_init__(self) -> None:
        require_positive("temperature", self.temperature)
        require_in_range("alpha", self.alpha, 0.0, 1.0)
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None (automatic), got {self.chunk_size}.")
        check_divergence(self.divergence, self.params)
        check_precision(self.precision)

    @property
    def params(self) -> DivergenceParams:
        return DivergenceParams(beta=self.beta, skew=self.skew)

    def chunk_plan(self, vocab_size: int, projected_buffers: int = 1, device_type: str = "cpu") -> ChunkPlan:
        """Rows per projected chunk and per elementwise block, for losses that project ``projected_buffers``
        (rows x vocab) tensors per chunk and then work through them block by block."""
        vocab_size = max(vocab_size, 1)
        block_elements = BLOCK_ELEMENTS if device_type == "cpu" else ACCELERATOR_BLOCK_ELEMENTS
        block = max(1, block_elements // vocab_size)
        if self.chunk_size is not None:
            return ChunkPlan(rows=self.chunk_size, block_rows=min(block, self.chunk_size))
        rows = max(block, PROJECTED_CHUNK_ELEMENTS // (vocab_size * projected_buffers))
        return ChunkPlan(rows=rows, block_rows=block)


@dataclass(frozen=True)
class ChunkPlan:
    """How a chunked loss walks the valid rows: ``rows`` per projected chunk, ``block_rows`` per block."""

    rows: int
    block_rows: int

    def blocks(self, count: int) -> list[slice]:
        """Row slices covering ``range(count)`` (one chunk) block by block."""
        return [slice(start, min(start + self.block_rows, count)) for start in range(0, count, self.block_rows)]


@dataclass
class LogitSource:
    """Next-token logits, either given directly or as hidden states to be projected by an ``lm_head``.

    ``states`` is (tokens, vocab) when ``head_weight`` is None, else (tokens, hidden) and the logits of a
    row are ``states @ head_weight.T + head_bias``. Only the chunk being evaluated is ever projected.
    """

    states: Tensor
    head_weight: Tensor | None = None
    head_bias: Tensor | None = None

    def __post_init__(self) -> None:
        if self.states.dim() != 2:
            raise ValueError(f"LogitSource.states must be 2-D (tokens, features), got {tuple(self.states.shape)}.")
        if self.head_weight is not None and self.head_weight.shape[1] != self.states.shape[1]:
            raise ValueError(
                f"lm_head weight {tuple(self.head_weight.shape)} does not match hidden size {self.states.shape[1]}."
            )

    @property
    def vocab_size(self) -> int:
        return self.states.shape[1] if self.head_weight is None else self.head_weight.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.states.shape[0]


@dataclass
class KDLossTerms:
    """A batch's distillation loss (differentiable) and detached statistics for logging.

    ``loss`` already carries the alpha/T^2 weighting; the statistics are raw sums over valid tokens.
    """

    loss: Tensor
    soft_sum: Tensor
    hard_sum: Tensor
    num_tokens: Tensor
    top1_agree: Tensor
    kl_sum: Tensor

    def as_tuple(self) -> tuple[Tensor, ...]:
        """The fields as a tuple of tensors: the one output form every model wrapper (DDP, ...) passes through."""
        return (self.loss, self.soft_sum, self.hard_sum, self.num_tokens, self.top1_agree, self.kl_sum)

    @classmethod
    def from_stats(cls, loss: Tensor, stats: Tensor, num_tokens: int) -> KDLossTerms:
        """From a chunked loss's (soft, hard, agree, kl) float64 statistics vector."""
        return cls(
            loss=loss,
            soft_sum=stats[0].float(),
            hard_sum=stats[1].float(),
            num_tokens=torch.tensor(num_tokens, device=loss.device),
            top1_agree=stats[2].float(),
            kl_sum=stats[3].float(),
        )


def causal_targets(labels: Tensor) -> Tensor:
    """Targets aligned with each position's logits: position i predicts labels[i + 1]. Flattened."""
    shifted = torch.full_like(labels, IGNORE_INDEX)
    shifted[..., :-1] = labels[..., 1:]
    return shifted.reshape(-1)


def _project(
    source_states: Tensor, weight: Tensor | None, bias: Tensor | None, rows: Tensor | slice, vocab: int
) -> Tensor:
    """float32 logits of the chosen rows, always a fresh tensor the caller may overwrite.

    The product runs in ``weight``'s dtype (pass the head already in the product dtype, see `precision.py`);
    the logits are upcast to float32 before anything else, and the bias is added in float32.
    """
    if weight is None:
        return source_states[rows][:, :vocab].to(torch.float32, copy=True)
    logits = (source_states[rows].to(weight.dtype) @ weight[:vocab].t()).float()
    if bias is not None:
        logits.add_(bias[:vocab].float())
    return logits


def project_rows(source: LogitSource, rows: Tensor | slice, vocab: int) -> Tensor:
    """float32 logits of a source's chosen rows (a fresh tensor), projecting hidden states when it has a head."""
    return _project(source.states, source.head_weight, source.head_bias, rows, vocab)


def _teacher_block(
    states: Tensor, projected: Tensor | None, selector: Tensor | slice, block: slice, vocab: int
) -> Tensor:
    """A fresh float32 copy of one block of teacher logits: from the chunk's projection when the teacher
    came as hidden states, else straight from the teacher's logits (any dtype, converted per block)."""
    if projected is not None:
        return projected[block]
    if isinstance(selector, slice):
        first = selector.start + block.start
        return states[first : first + block.stop - block.start, :vocab].to(torch.float32, copy=True)
    return states[selector[block], :vocab].to(torch.float32, copy=True)


def _row_chunks(rows: Tensor, step: int) -> list[tuple[Tensor, Tensor | slice]]:
    """(index tensor, selector) per chunk; the selector is a slice when all rows form one contiguous run."""
    count = rows.numel()
    contiguous = count > 0 and int(rows[-1]) - int(rows[0]) + 1 == count  # one host sync per batch
    first = int(rows[0]) if contiguous else 0
    chunks = []
    for start in range(0, count, step):
        index = rows[start : start + step]
        chunks.append((index, slice(first + start, first + start + index.numel()) if contiguous else index))
    return chunks


def _block_terms(z: Tensor, tz: Tensor, targets: Tensor, spec: KDLossSpec, stats: Tensor, need_grad: bool) -> None:
    """Add one block's statistics to ``stats`` and, with ``need_grad``, overwrite ``z`` with d(loss)/dz.

    ``z`` (a view into the chunk's student logits) and ``tz`` are float32 (block x vocab) and both are used as
    scratch space.
    """
    temperature, alpha = spec.temperature, spec.alpha
    targets = targets.unsqueeze(1)
    if spec.with_metrics:
        stats[2] += (z.argmax(-1) == tz.argmax(-1)).sum()
    if temperature == 1.0 and spec.divergence == "forward_kl":
        _forward_kl_block_at_t1(z, tz, targets, alpha, stats, spec.with_metrics, need_grad)
        return
    # Hard term at T = 1. Its gradient (softmax(z) - onehot) is formed first, while z is intact, so the
    # divergence below may overwrite z and tz in place.
    if spec.with_metrics or alpha < 1.0:
        stats[1] += (torch.logsumexp(z, -1) - z.gather(1, targets).squeeze(1)).sum()
    grad_hard = None
    if need_grad and alpha < 1.0:
        grad_hard = z.softmax(-1)
        grad_hard.scatter_add_(1, targets, torch.full_like(targets, -1.0, dtype=grad_hard.dtype))
        grad_hard.mul_(1.0 - alpha)
    if temperature != 1.0:
        z.div_(temperature)
        tz.div_(temperature)
    if spec.with_metrics and spec.divergence != "forward_kl":
        stats[3] += divergence_rows("forward_kl", z, tz, need_grad=False).values.sum()
    soft = divergence_rows(spec.divergence, z, tz, spec.params, need_grad and alpha > 0, overwrite_inputs=True)
    stats[0] += soft.values.sum()
    if spec.divergence == "forward_kl":
        stats[3] += soft.values.sum()
    if not need_grad:
        return
    grad = grad_hard
    if soft.grad_s is not None:
        grad = soft.grad_s.mul_(alpha * temperature)
        if grad_hard is not None:
            grad.add_(grad_hard)
    if grad is None:  # defensive: never leave logits where a gradient is expected
        z.zero_()
    elif grad is not z:
        z.copy_(grad)


def _forward_kl_block_at_t1(
    z: Tensor, tz: Tensor, targets: Tensor, alpha: float, stats: Tensor, with_metrics: bool, need_grad: bool
) -> None:
    """`_block_terms` for the default settings (forward KL, T = 1), where the soft and hard terms share q.

    At T = 1 the hard CE's normaliser is the student's own log-softmax normaliser, and the two gradients
    alpha * (q - p) + (1 - alpha) * (q - onehot) collapse into q - alpha * p - (1 - alpha) * onehot: four
    exponential passes over the block instead of six, and no separate buffer for the hard gradient.
    """
    log_z = z.logsumexp(-1, keepdim=True)
    if with_metrics or alpha < 1.0:
        stats[1] += (log_z - z.gather(1, targets)).sum()
    log_p = tz.sub_(tz.logsumexp(-1, keepdim=True)).clamp_min_(LOG_ZERO)
    p = log_p.exp()
    log_q = z.sub_(log_z)
    kl = log_p.sub_(log_q).mul_(p).sum()
    stats[0] += kl
    stats[3] += kl
    if not need_grad:
        return
    grad = log_q.exp_()
    if alpha > 0.0:
        grad.sub_(p.mul_(alpha))
    if alpha < 1.0:
        grad.scatter_add_(1, targets, torch.full_like(targets, alpha - 1.0, dtype=grad.dtype))


class _ChunkedTokenKD(torch.autograd.Function):
    """Chunked forward that also produces the input gradients; backward only rescales them."""

    @staticmethod
    def forward(
        ctx,
        s_states,
        s_weight,
        s_bias,
        t_states,
        t_weight,
        t_bias,
        targets,
        rows,
        spec: KDLossSpec,
        vocab,
        dtypes,
        t_mixture,
    ):
        grads = StudentGradients(s_states, s_weight, s_bias, ctx.needs_input_grad[:3], vocab, dtypes[0])
        t_head = product_weight(t_weight, vocab, dtypes[1])
        need_grad = grads.needed
        stats = torch.zeros(4, dtype=torch.float64, device=s_states.device)  # soft, hard, agree, kl
        # A teacher mixture projects each member into a scratch buffer and mixes into a second one.
        buffers = 3 if t_mixture is not None else (1 if t_weight is None else 2)
        plan = spec.chunk_plan(vocab, buffers, s_states.device.type)
        for chunk_rows, selector in _row_chunks(rows, plan.rows):
            # One projection per chunk (efficient GEMMs), then cache-sized blocks for everything elementwise;
            # each block leaves its logit gradient in z, so the chunk ends holding d(loss)/dz.
            z = _project(s_states, grads.head, s_bias, selector, vocab)
            with torch.no_grad():
                if t_mixture is not None:
                    tz = t_mixture.chunk_logits(selector, vocab, spec.temperature)
                else:
                    tz = None if t_weight is None else _project(t_states, t_head, t_bias, selector, vocab)
            chunk_targets = targets.index_select(0, chunk_rows)
            for block in plan.blocks(chunk_rows.numel()):
                t_block = _teacher_block(t_states, tz, selector, block, vocab)
                _block_terms(z[block], t_block, chunk_targets[block], spec, stats, need_grad)
            del tz
            if need_grad:
                grads.add(z, chunk_rows, selector)
            del z

        # NaN/+inf teacher logits (or a masked vocabulary under reverse KL) make the loss non-finite; checking the
        # sum costs one sync per batch, and only then are the teacher rows scanned to say which input is wrong.
        if not bool(torch.isfinite(stats[:2]).all()):
            if t_mixture is not None:
                chunks = (t_mixture.chunk_logits(index, vocab, 1.0) for index, _ in _row_chunks(rows, plan.rows))
            else:
                chunks = (_project(t_states, t_head, t_bias, index, vocab) for index, _ in _row_chunks(rows, plan.rows))
            raise non_finite_loss_error(chunks, spec.divergence, spec.params)
        ctx.grads = grads.finish()
        loss = combined_loss(stats, spec.alpha, spec.temperature)
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats):
        return pop_scaled_grads(ctx, grad_loss, other_inputs=9)


def token_kd_loss(student: LogitSource, teacher: Any, targets: Tensor, spec: KDLossSpec) -> KDLossTerms:
    """Distillation loss summed over positions whose target is not -100.

    ``targets`` is (tokens,) and already aligned with the rows of both sources (use ``causal_targets``).
    If the two vocabularies differ only by padding rows, both sides are sliced to the shared range; the
    caller is responsible for having checked that the tokenizers are the same. ``teacher`` is a `LogitSource`
    or a `TeacherMixture` (several teachers mixed chunk by chunk).
    """
    if student.num_tokens != teacher.num_tokens or targets.numel() != student.num_tokens:
        raise ValueError(
            f"Student ({student.num_tokens}), teacher ({teacher.num_tokens}) and targets ({targets.numel()}) "
            "must cover the same number of token positions."
        )
    vocab = min(student.vocab_size, teacher.vocab_size)
    targets = targets.to(student.states.device)
    rows = torch.nonzero(targets != IGNORE_INDEX).squeeze(1)
    if rows.numel() and int(targets.index_select(0, rows).max()) >= vocab:
        raise ValueError(f"A target token id is >= the shared vocabulary size {vocab}.")
    mixture = teacher if not isinstance(teacher, LogitSource) else None
    t_source = teacher if mixture is None else mixture.members[0]
    dtypes = tuple(product_dtype(spec.precision, source.states, source.head_weight) for source in (student, t_source))
    if mixture is not None:
        mixture = mixture.with_heads_in(dtypes[1], vocab)
    with autocast_off(student.states.device):
        loss, stats = _ChunkedTokenKD.apply(
            student.states,
            student.head_weight,
            student.head_bias,
            None if mixture is not None else teacher.states.to(student.states.device),
            None if mixture is not None else teacher.head_weight,
            None if mixture is not None else teacher.head_bias,
            targets,
            rows,
            spec,
            vocab,
            dtypes,
            mixture,
        )
    return KDLossTerms.from_stats(loss, stats, rows.numel())


def token_kd_loss_from_logits(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, spec: KDLossSpec
) -> KDLossTerms:
    """Convenience form for (batch, seq, vocab) causal-LM logits and unshifted (batch, seq) labels."""
    return token_kd_loss(
        LogitSource(student_logits.reshape(-1, student_logits.shape[-1])),
        LogitSource(teacher_logits.reshape(-1, teacher_logits.shape[-1])),
        causal_targets(labels),
        spec,
    )
