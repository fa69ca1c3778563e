"""Which dtype the chunked losses' matrix products run in (their "precision policy").

Two settings, ``loss_precision`` in `KDConfig` and ``precision`` in the loss specs:

* ``"auto"`` (default): the `lm_head` projections and the backward products (gradients of the hidden states
  and of the `lm_head` weight) run in the run's compute dtype: the autocast dtype when autocast is on, else
  the `lm_head` weight's dtype. These are the loss's only large GEMMs, and in bf16 they run at the bf16 rate
  (tensor cores on GPUs), as they would under plain autograd. Everything numerically delicate stays float32:
  the logits are upcast right after the projection, so log-softmax, the divergence and its logit gradient
  are float32, and loss sums accumulate in float64.
* ``"float32"``: every product in float32 too (bf16 weights or autocast notwithstanding), and the `lm_head`
  weight gradient accumulates over chunks in a float32 buffer. Slower under bf16 and, for a bf16 head, a
  float32 copy of the weight plus a float32 gradient buffer; use it to check whether a result depends on
  the loss's rounding, or when a large head's bf16 gradient is too coarse.

The losses run with autocast disabled and apply the chosen dtype themselves, so the result does not depend on
which operations an autocast implementation happens to list.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

LOSS_PRECISIONS: tuple[str, ...] = ("auto", "float32")


def check_precision(precision: str) -> None:
    """Raise a clear error for an unknown precision setting."""
    if precision not in LOSS_PRECISIONS:
        raise ValueError(f"loss precision must be one of {', '.join(LOSS_PRECISIONS)}; got {precision!r}.")


def product_dtype(precision: str, states: Tensor, head_weight: Tensor | None) -> torch.dtype:
    """The dtype of a logit source's projection and backward products under ``precision``.

    Call it where the loss is called (autocast still on): it reads the caller's autocast state. Sources given
    as logits have no products; their dtype only matters for being converted to float32 per chunk.
    """
    check_precision(precision)
    if precision == "float32" or head_weight is None:
        return torch.float32
    device_type = states.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return head_weight.dtype


def product_weight(weight: Tensor | None, vocab: int, dtype: torch.dtype) -> Tensor | None:
    """The first ``vocab`` rows of an `lm_head` weight in the product dtype, cast once per loss call (a view
    when the dtype already matches)."""
    return None if weight is None else weight[:vocab].to(dtype)


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Disable autocast for the loss body, whose products already run in the dtype chosen above."""
    if not torch.is_autocast_enabled(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)
