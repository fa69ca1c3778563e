"""Gradient buffers shared by the chunked losses (dense and sparse teacher).

A chunked loss computes d(loss)/d(logits) for one chunk of rows at a time; this class turns that into the
gradients its inputs need (the logits tensor, or hidden states plus `lm_head` weight and bias) and keeps
them until autograd's backward asks for them.
"""

from __future__ import annotations

import torch
from torch import Tensor


class StudentGradients:
    """Accumulates per-chunk logit gradients into the gradients of the student's inputs."""

    def __init__(
        self, states: Tensor, weight: Tensor | None, bias: Tensor | None, needs: tuple[bool, bool, bool], vocab: int
    ) -> None:
        self.states, self.weight, self.vocab = states, weight, vocab
        need_states, need_weight, need_bias = needs
        device = states.device
        self.grad_states = torch.zeros_like(states) if need_states else None
        # Weight and bias gradients accumulate over chunks in float32, then are cast once at the end.
        self.grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=device) if need_weight else None
        self.grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=device) if need_bias else None
        self.bias_dtype = None if bias is None else bias.dtype

    @property
    def needed(self) -> bool:
        return any(g is not None for g in (self.grad_states, self.grad_weight, self.grad_bias))

    def add(self, grad_logits: Tensor, rows: Tensor, picked_states: Tensor | None = None) -> None:
        """Add the float32 gradient w.r.t. the logits of `rows` (chunk x vocab).

        Rows may repeat, within a call and across calls (the cross-vocabulary loss reads some rows twice): their
        gradients add up. `picked_states` are `states[rows]` when the caller already has them (saves one gather).
        """
        vocab = self.vocab
        if self.weight is None:
            if self.grad_states is not None:
                full = torch.zeros(rows.numel(), self.states.shape[1], dtype=self.states.dtype, device=rows.device)
                full[:, :vocab] = grad_logits.to(self.states.dtype)
                self.grad_states.index_add_(0, rows, full)
            return
        if self.grad_states is not None:
            grad_h = grad_logits.to(self.weight.dtype) @ self.weight[:vocab]
            self.grad_states.index_add_(0, rows, grad_h.to(self.states.dtype))
        if self.grad_weight is not None:
            if picked_states is None:
                picked_states = self.states[rows]
            self.grad_weight[:vocab].addmm_(grad_logits.t(), picked_states.float())
        if self.grad_bias is not None:
            self.grad_bias[:vocab] += grad_logits.sum(0)

    def finish(self) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """The gradients in their parameters' dtypes, for `ctx` to keep until backward."""
        weight = None if self.grad_weight is None else self.grad_weight.to(self.weight.dtype)
        bias = None if self.grad_bias is None else self.grad_bias.to(self.bias_dtype)
        return self.grad_states, weight, bias


def scale_in_place(grads: tuple[Tensor | None, ...], grad_output: Tensor) -> tuple[Tensor | None, ...]:
    """Multiply stored gradients by the incoming scalar gradient without copying them.

    They are used exactly once; a copy of a (vocab x hidden) weight gradient would be the largest
    allocation of the whole loss.
    """
    return tuple(None if g is None else g.mul_(grad_output.to(g.dtype)) for g in grads)


def combined_loss(stats: Tensor, alpha: float, temperature: float) -> Tensor:
    """alpha * T^2 * soft + (1 - alpha) * hard from a chunked loss's (soft, hard, ...) float64 statistics."""
    return (alpha * temperature**2 * stats[0] + (1.0 - alpha) * stats[1]).float()
