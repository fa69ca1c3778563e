"""Cross-entropy summed over target positions, chunked like the KD losses, with a closed-form gradient.

Why not autograd over chunks: each chunk's `index_select` would send back a gradient the size of the *whole*
input in backward, one per chunk; for logits that is a (tokens x vocab) tensor per chunk. Here the gradient
(softmax - onehot) is formed block by block and written once into the input's gradient, and with a
`LogitSource` carrying hidden states plus the `lm_head` weight, full logits are never formed at all.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .chunk_grads import StudentGradients, pop_scaled_grads
from .precision import autocast_off, product_dtype
from .token_kd import IGNORE_INDEX, ChunkPlan, KDLossSpec, LogitSource, _project, _row_chunks


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, states, weight, bias, targets, rows, plan: ChunkPlan, vocab, dtype):
        grads = StudentGradients(states, weight, bias, ctx.needs_input_grad[:3], vocab, dtype)
        total = torch.zeros((), dtype=torch.float64, device=states.device)
        for chunk_rows, selector in _row_chunks(rows, plan.rows):
            z = _project(states, grads.head, bias, selector, vocab)
            chunk_targets = targets.index_select(0, chunk_rows).unsqueeze(1)
            for block in plan.blocks(chunk_rows.numel()):
                logits, block_targets = z[block], chunk_targets[block]
                lse = logits.logsumexp(-1, keepdim=True)
                total += (lse - logits.gather(1, block_targets)).sum()
                if grads.needed:  # d CE / d z = softmax(z) - onehot, written over the block's logits
                    logits.sub_(lse).exp_()
                    logits.scatter_add_(1, block_targets, torch.full_like(block_targets, -1.0, dtype=logits.dtype))
            if grads.needed:
                grads.add(z, chunk_rows, selector)
            del z
        if not bool(torch.isfinite(total)):
            raise ValueError("The cross-entropy is not finite: the student's logits contain NaN/Inf.")
        ctx.grads = grads.finish()
        return total.float()

    @staticmethod
    def backward(ctx, grad_total):
        return pop_scaled_grads(ctx, grad_total, other_inputs=5)


def cross_entropy_sum(
    student: LogitSource, targets: Tensor, chunk_size: int | None = None, precision: str = "auto"
) -> Tensor:
    """Sum of -log softmax(logits)[target] over rows whose target is not -100 (float32, differentiable).

    ``targets`` is (tokens,) and aligned with the rows of ``student`` (use ``causal_targets`` for causal LM
    labels). ``chunk_size`` is the number of rows projected at once (None: automatic, see ``KDLossSpec``);
    ``precision`` the dtype of the `lm_head` products (see ``precision.py``).
    """
    if targets.numel() != student.num_tokens:
        raise ValueError(f"targets ({targets.numel()}) and logit rows ({student.num_tokens}) must match.")
    vocab = student.vocab_size
    targets = targets.to(student.states.device)
    rows = torch.nonzero(targets != IGNORE_INDEX).squeeze(1)
    if rows.numel() and int(targets.index_select(0, rows).max()) >= vocab:
        raise ValueError(f"A target token id is >= the vocabulary size {vocab}.")
    plan = KDLossSpec(chunk_size=chunk_size).chunk_plan(vocab, device_type=student.states.device.type)
    dtype = product_dtype(precision, student.states, student.head_weight)
    with autocast_off(student.states.device):
        return _ChunkedCrossEntropy.apply(
            student.states, student.head_weight, student.head_bias, targets, rows, plan, vocab, dtype
        )
