"""Gradient buffers shared by the chunked losses (dense and sparse teacher).

A chunked loss computes d(loss)/d(logits) for one chunk of rows at a time; this class turns that into the
gradients its inputs need (the logits tensor, or hidden states plus `lm_head` weight and bias) and keeps
them until autograd's backward asks for them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .precision import product_weight


class StudentGradients:
    """Accumulates per-chunk logit gradients into the gradients of the student's inputs."""

    def __init__(
        self,
        states: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        needs: tuple[bool, bool, bool],
        vocab: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.states, self.weight, self.vocab = states, weight, vocab
        # The lm_head in the product dtype (see `precision.py`): the forward projects with it too.
        self.head = product_weight(weight, vocab, dtype)
        need_states, need_weight, need_bias = needs
        device = states.device
        self.grad_states = torch.zeros_like(states) if need_states else None
        # The weight gradient accumulates over chunks in float32 when the products are float32, else in the
        # weight's own dtype (no float32 vocab x hidden buffer beside a bf16 head); it is cast once at the end.
        accumulate = torch.float32 if dtype == torch.float32 or weight is None else weight.dtype
        self.grad_weight = torch.zeros(weight.shape, dtype=accumulate, device=device) if need_weight else None
        self.grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=device) if need_bias else None
        self.bias_dtype = None if bias is None else bias.dtype

    @property
    def needed(self) -> bool:
        return any(g is not None for g in (self.grad_states, self.grad_weight, self.grad_bias))

    def add(self, grad_logits: Tensor, rows: Tensor, selector: Tensor | slice | None = None) -> None:
        """Add the float32 gradient w.r.t. the logits of `rows` (chunk x vocab); the products with the head
        and the hidden states run in the product dtype.

        Rows may repeat, within a call and across calls (the cross-vocabulary loss reads some rows twice): their
        gradients add up. `selector` names the same rows as a slice when they are contiguous, so that they are
        read and written through views instead of gathers.
        """
        where = rows if selector is None else selector
        vocab = self.vocab
        if self.head is None:
            if self.grad_states is not None:
                _add_rows(self.grad_states[:, :vocab], where, grad_logits)
            return
        head = self.head
        grad = grad_logits.to(head.dtype)  # the float32 logit gradient, cast once for both products
        if self.grad_states is not None:
            _add_rows(self.grad_states, where, grad @ head)
        if self.grad_weight is not None:
            hidden, target = self.states[where].to(head.dtype), self.grad_weight[:vocab]
            if target.dtype == head.dtype:
                target.addmm_(grad.t(), hidden)
            else:  # float32 weights under bf16 autocast: a bf16 product added to the float32 gradient
                target.add_(grad.t() @ hidden)
        if self.grad_bias is not None:
            self.grad_bias[:vocab] += grad_logits.sum(0)

    def finish(self) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """The gradients in their parameters' dtypes, for `ctx` to keep until backward."""
        weight = None if self.grad_weight is None else self.grad_weight.to(self.weight.dtype)
        bias = None if self.grad_bias is None else self.grad_bias.to(self.bias_dtype)
        return self.grad_states, weight, bias


def _add_rows(target: Tensor, where: Tensor | slice, values: Tensor) -> None:
    """target[where] += values, accumulating repeated indices (plain `+=` on an index would drop repeats)."""
    values = values.to(target.dtype)
    if isinstance(where, slice):
        target[where] += values
    else:
        target.index_add_(0, where, values)


def scale_in_place(grads: tuple[Tensor | None, ...], grad_output: Tensor) -> tuple[Tensor | None, ...]:
    """Multiply stored gradients by the incoming scalar gradient without copying them.

    They are used exactly once; a copy of a (vocab x hidden) weight gradient would be the largest
    allocation of the whole loss.
    """
    return tuple(None if g is None else g.mul_(grad_output.to(g.dtype)) for g in grads)


def combined_loss(stats: Tensor, alpha: float, temperature: float) -> Tensor:
    """alpha * T^2 * soft + (1 - alpha) * hard from a chunked loss's (soft, hard, ...) float64 statistics."""
    return (alpha * temperature**2 * stats[0] + (1.0 - alpha) * stats[1]).float()


def pop_scaled_grads(ctx, grad_output: Tensor, other_inputs: int) -> tuple[Tensor | None, ...]:
    """What a chunked loss's backward returns: its stored input gradients scaled by the incoming gradient
    (then released), and None for each of its `other_inputs` non-differentiable inputs."""
    scaled = scale_in_place(ctx.grads, grad_output)
    ctx.grads = None
    return (*scaled, *(None,) * other_inputs)
