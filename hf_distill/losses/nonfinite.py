"""Say why a chunked distillation loss came out NaN/Inf, so the error points at the input to fix.

The loss checks one finite-ness flag per batch (no extra pass on the normal path). Only when that flag trips
does this module look at the teacher rows again, and tell apart: NaN or +inf teacher logits (an error: fp16
overflow, a broken capture), rows where every token is masked (no distribution at all), a masked vocabulary
(-inf logits, probability 0) under a divergence that is infinite there, and a student that diverged.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from .divergences import DivergenceParams, handles_zero_teacher_probability

MASK_COMPATIBLE_DIVERGENCES = (
    "forward_kl, jsd (jsd_beta < 1), skew_forward_kl, skew_reverse_kl (skew_lambda > 0), tvd or mse"
)


def non_finite_loss_error(teacher_chunks: Iterable[Tensor], divergence: str, params: DivergenceParams) -> ValueError:
    """The error to raise for a non-finite loss, after scanning the teacher logits of the target rows."""
    nan = pos_inf = rows_without_mass = 0
    masked = False
    for logits in teacher_chunks:
        neg_inf = torch.isneginf(logits)
        nan += int(torch.isnan(logits).sum())
        pos_inf += int(torch.isposinf(logits).sum())
        rows_without_mass += int(neg_inf.all(-1).sum())
        masked = masked or bool(neg_inf.any())
    if nan or pos_inf:
        return ValueError(
            f"The distillation loss is not finite: the teacher's logits contain NaN/Inf values on target positions "
            f"({nan} NaN, {pos_inf} +inf). Check the teacher's dtype (fp16 overflow) or the precomputed columns. "
            "(A logit of -inf is fine: it gives that token probability 0.)"
        )
    if rows_without_mass:
        return ValueError(
            f"The teacher's logits are -inf on every token at {rows_without_mass} target positions, so its "
            "distribution there is undefined (no token has any probability). Leave at least one token unmasked, "
            "or set those positions' labels to -100."
        )
    if masked and not handles_zero_teacher_probability(divergence, params):
        reason = (
            "compares logits, and a -inf logit has no finite direction"
            if divergence == "cosine"
            else "is infinite where the teacher gives a token probability 0 (logit -inf), since a student with "
            "finite logits gives every token some probability"
        )
        return ValueError(
            f"divergence={divergence!r} {reason}. The teacher masks part of the vocabulary; use "
            f"{MASK_COMPATIBLE_DIVERGENCES}, or give the masked tokens a large finite negative logit instead."
        )
    return ValueError(
        "The distillation loss is not finite although the teacher's logits are valid: the student's logits contain "
        "NaN/Inf (training diverged? lower the learning rate, or check the student's dtype for fp16 overflow)."
    )
