"""Several teachers' next-token distributions mixed into one, a chunk of rows at a time.

Two ways to combine teachers with weights w_i (summing to 1), at temperature T:

* ``probability``: p = sum_i w_i softmax(z_i / T), the mixture a sampler would draw from. Computed in log space as
  logsumexp_i(log w_i + log_softmax(z_i / T)), so no teacher's small probabilities underflow.
* ``log_probability``: log p = sum_i w_i log_softmax(z_i / T) up to normalisation (a weighted geometric mean, which
  keeps only what every teacher finds likely).

The loss divides teacher logits by T, so a chunk is handed to it as ``T * log p``: softmax((T log p) / T) = p.
Only the chunk being evaluated is ever projected, so the memory of the loss grows with the number of teachers
only by their hidden states (plus one chunk-sized scratch buffer), never by a (tokens x vocab) tensor per teacher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .precision import product_weight
from .token_kd import LogitSource, project_rows

COMBINE_MODES = ("probability", "log_probability")


@dataclass
class TeacherMixture:
    """Teachers over the same token positions, mixed with `weights` in the `combine` way."""

    members: list[LogitSource]
    weights: tuple[float, ...]
    combine: str = "probability"

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise ValueError("A TeacherMixture needs at least two teachers; use the single LogitSource directly.")
        if len(self.weights) != len(self.members):
            raise ValueError(f"{len(self.members)} teachers but {len(self.weights)} weights.")
        check_mixture_weights(self.weights)
        if self.combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {COMBINE_MODES}, got {self.combine!r}.")
        tokens = {member.num_tokens for member in self.members}
        if len(tokens) != 1:
            raise ValueError(f"Every teacher must cover the same token positions, got {sorted(tokens)}.")

    @property
    def vocab_size(self) -> int:
        return min(member.vocab_size for member in self.members)

    @property
    def num_tokens(self) -> int:
        return self.members[0].num_tokens

    @property
    def device(self) -> torch.device:
        return self.members[0].states.device

    def with_heads_in(self, dtype: torch.dtype, vocab: int) -> TeacherMixture:
        """The same mixture with each member's head cast once to the loss's product dtype (see `precision.py`)."""
        members = [replace(m, head_weight=product_weight(m.head_weight, vocab, dtype)) for m in self.members]
        return replace(self, members=members)

    def chunk_logits(self, rows: Tensor | slice, vocab: int, temperature: float) -> Tensor:
        """float32 (rows x vocab) ``T * log p_mix`` for the chosen rows; one scratch buffer besides the result."""
        total = sum(self.weights)
        mixed: Tensor | None = None
        for member, weight in zip(self.members, self.weights):
            log_probs = project_rows(member, rows, vocab)
            if temperature != 1.0:
                log_probs.div_(temperature)
            log_probs = torch.log_softmax(log_probs, dim=-1)
            if self.combine == "probability":
                log_probs.add_(math.log(weight / total))
                mixed = log_probs if mixed is None else torch.logaddexp(mixed, log_probs, out=mixed)
            else:
                log_probs.mul_(weight / total)
                mixed = log_probs if mixed is None else mixed.add_(log_probs)
            del log_probs
        return mixed.mul_(temperature) if temperature != 1.0 else mixed


def check_mixture_weights(weights: tuple[float, ...] | list[float]) -> None:
    """Weights must be finite and positive (a zero-weight teacher should simply be left out)."""
    if not weights or any(not (math.isfinite(w) and w > 0) for w in weights):
        raise ValueError(f"Teacher weights must be finite and > 0, got {list(weights)}.")
