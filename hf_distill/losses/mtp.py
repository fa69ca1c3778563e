"""Multi-token-prediction (MTP) self-distillation terms, one auxiliary depth at a time.

An auxiliary head of depth ``d`` reads position ``i`` and predicts the token at ``i + d + 1``. Its terms are the
cross-entropy on that token and a KL towards the *main* head's distribution at position ``i + d`` (which predicts
the same token one step later, with more context), detached so the main head is never pulled towards its
auxiliaries. Both are sums over the positions whose target is not -100, like every loss here, so the trainer
divides once by the step's target-token count.

The KL and the CE come from `token_kd_loss` (chunked, no float32 tokens x vocab tensor): its
``alpha * T^2 * KL + (1 - alpha) * CE`` times ``kd_weight + ce_weight`` with ``alpha = kd / (kd + ce)`` is
exactly ``ce_weight * CE + kd_weight * T^2 * KL``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .settings import require_non_negative, require_positive
from .token_kd import KDLossSpec, KDLossTerms, LogitSource, token_kd_loss


@dataclass(frozen=True)
class MTPLossSpec:
    """Weights of one auxiliary depth's terms (seed 003, section 5.3 defaults) and how to chunk them."""

    ce_weight: float = 0.3
    kd_weight: float = 0.1
    temperature: float = 2.0
    chunk_size: int | None = None
    precision: str = "auto"

    def __post_init__(self) -> None:
        require_non_negative("mtp_ce_weight", self.ce_weight)
        require_non_negative("mtp_kd_weight", self.kd_weight)
        require_positive("mtp_temperature", self.temperature)
        if self.ce_weight + self.kd_weight <= 0:
            raise ValueError("mtp_ce_weight and mtp_kd_weight are both 0: the auxiliary heads would learn nothing.")

    def kd_spec(self) -> KDLossSpec:
        """The token-KD spec whose alpha-weighted loss, times `scale`, is this spec's weighted sum."""
        alpha = self.kd_weight / self.scale
        return KDLossSpec(
            divergence="forward_kl",
            temperature=self.temperature,
            alpha=alpha,
            chunk_size=self.chunk_size,
            precision=self.precision,
        )

    @property
    def scale(self) -> float:
        return self.ce_weight + self.kd_weight


def lead_rows(states: Tensor, depth: int) -> Tensor:
    """Rows ``[0, S - depth)`` of each sequence of a (batch, seq, features) tensor, flattened: where a depth-``depth``
    head reads."""
    return states[:, : states.shape[1] - depth].reshape(-1, states.shape[-1])


def lagged_rows(states: Tensor, depth: int) -> Tensor:
    """Rows ``[depth, S)`` of each sequence, flattened: the main head's positions that predict the same tokens."""
    return states[:, depth:].reshape(-1, states.shape[-1])


def depth_targets(causal_targets: Tensor, depth: int) -> Tensor:
    """Targets of a depth-``depth`` head from the (batch, seq) next-token targets: position i gets ``t[i + depth]``."""
    return causal_targets[:, depth:].reshape(-1)


def mtp_depth_terms(aux: LogitSource, main: LogitSource, targets: Tensor, spec: MTPLossSpec) -> KDLossTerms:
    """``ce_weight * CE(aux) + kd_weight * T^2 * KL(main_T || aux_T)`` summed over valid rows (rows already aligned).

    ``main`` is detached here: the auxiliary head learns from the main head, never the reverse. In the returned
    statistics, ``soft_sum`` is the KL at temperature T (without T^2) and ``hard_sum`` the CE.
    """
    teacher = LogitSource(
        main.states.detach(),
        None if main.head_weight is None else main.head_weight.detach(),
        None if main.head_bias is None else main.head_bias.detach(),
    )
    terms = token_kd_loss(aux, teacher, targets, spec.kd_spec())
    terms.loss = terms.loss * spec.scale
    return terms
