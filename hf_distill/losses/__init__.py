"""Pure tensor loss functions (no transformers import): divergences, chunked token KD, feature terms."""

from .cross_entropy import cross_entropy_sum
from .divergences import DIVERGENCES, DivergenceParams, divergence_rows
from .token_kd import (
    IGNORE_INDEX,
    KDLossSpec,
    KDLossTerms,
    LogitSource,
    causal_targets,
    token_kd_loss,
    token_kd_loss_from_logits,
)

__all__ = [
    "DIVERGENCES",
    "IGNORE_INDEX",
    "DivergenceParams",
    "KDLossSpec",
    "KDLossTerms",
    "LogitSource",
    "causal_targets",
    "cross_entropy_sum",
    "divergence_rows",
    "token_kd_loss",
    "token_kd_loss_from_logits",
]
