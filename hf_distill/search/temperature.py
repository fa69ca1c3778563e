"""`find_temperature`: score a list of temperatures by the held-out KD loss of the student as it is now.

No training: each temperature is one evaluation pass with the trainer's own teacher source and loss, so
whatever the trainer distils from (a live teacher, an ensemble, a cross-tokenizer teacher, feature terms) is
scored the way it would be trained. It answers "which T makes the current student's loss lowest", a cheap
first guess; whether training at that T gives the better student is a separate question (train a few short
runs and compare held-out CE for that).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..losses.settings import require_positive


@dataclass(frozen=True)
class TemperatureScore:
    """Held-out per-target-token values at one temperature.

    kd_loss: the training objective, ``alpha * T^2 * D_T + (1 - alpha) * CE``; divergence: ``D_T`` itself
    (the configured divergence between the softened distributions, without the ``T^2``); cross_entropy: the
    student's CE on the labels at T = 1 (the same for every T).
    """

    temperature: float
    kd_loss: float
    divergence: float
    cross_entropy: float
    num_tokens: int


@dataclass(frozen=True)
class TemperatureSearch:
    """The scores of every temperature, in the order given, and the one with the lowest KD loss."""

    scores: tuple[TemperatureScore, ...]
    alpha: float

    @property
    def best(self) -> TemperatureScore:
        return min(self.scores, key=lambda score: score.kd_loss)

    def table(self) -> str:
        """A Markdown table of the scores, the best row marked."""
        best = self.best.temperature
        lines = [
            f"| temperature | KD loss (alpha={self.alpha:g}) | divergence D_T | CE | |",
            "|---:|---:|---:|---:|---|",
        ]
        for s in self.scores:
            mark = "best" if s.temperature == best else ""
            lines.append(
                f"| {s.temperature:g} | {s.kd_loss:.4f} | {s.divergence:.4f} | {s.cross_entropy:.4f} | {mark} |"
            )
        return "\n".join(lines)


def _checked_temperatures(temperatures: Sequence[float]) -> list[float]:
    values = [float(t) for t in temperatures]
    if not values:
        raise ValueError("find_temperature needs at least one temperature.")
    for value in values:
        require_positive("temperature", value)
    if len(set(values)) != len(values):
        raise ValueError(f"temperatures must be distinct, got {values}.")
    return values


def find_temperature(
    trainer: Any,
    temperatures: Sequence[float],
    eval_dataset: Any = None,
    alpha: float | None = None,
    max_batches: int | None = None,
) -> TemperatureSearch:
    """Held-out KD loss of ``trainer``'s current student at each temperature (see the module docstring).

    Args:
        trainer: a `KDTrainer` (or subclass) with a teacher; its student is left exactly as it was.
        temperatures: the temperatures to score (each > 0, distinct).
        eval_dataset: held-out data in any format the trainer accepts; default the trainer's `eval_dataset`.
        alpha: weight of the soft term in the scored loss; default `args.alpha` (1.0 scores ``T^2 * D_T`` alone).
        max_batches: score only this many evaluation batches.
    """
    values = _checked_temperatures(temperatures)
    source = trainer.teacher_source
    if source is None or getattr(source, "kind", "") == "precomputed":
        raise ValueError(
            "find_temperature needs a teacher that can be run at any temperature; precomputed columns hold the "
            "teacher's probabilities at the one temperature they were captured at."
        )
    if eval_dataset is None and trainer.eval_dataset is None:
        raise ValueError("find_temperature needs held-out data: pass eval_dataset or build the trainer with one.")
    alpha = trainer.args.alpha if alpha is None else alpha
    specs = {t: trainer.args.loss_spec(temperature=t, alpha=alpha) for t in values}  # validates alpha
    sums = {t: torch.zeros(4, dtype=torch.float64, device=trainer.args.device) for t in values}
    model, saved_spec, was_training = trainer.model, trainer.loss_spec, trainer.model.training
    model.eval()
    try:
        with torch.no_grad():
            for index, batch in enumerate(trainer.get_eval_dataloader(eval_dataset)):
                if max_batches is not None and index >= max_batches:
                    break
                batch = trainer._prepare_inputs(batch)
                for t in values:
                    # One teacher signal per temperature: some sources (cross-tokenizer) read it in `signal`.
                    trainer.loss_spec = specs[t]
                    terms = trainer.loss_terms(model, batch)
                    sums[t] += torch.stack(
                        [terms.loss.double(), terms.soft_sum.double(), terms.hard_sum.double(), terms.num_tokens]
                    ).to(sums[t])
    finally:
        trainer.loss_spec = saved_spec
        model.train(was_training)
    scores = []
    for t in values:
        loss, soft, hard, tokens = trainer.accelerator.reduce(sums[t], reduction="sum").tolist()
        if tokens == 0:
            raise ValueError("The held-out data has no target tokens (every label is -100).")
        scores.append(TemperatureScore(t, loss / tokens, soft / tokens, hard / tokens, int(tokens)))
    if any(not math.isfinite(s.kd_loss) for s in scores):
        raise FloatingPointError(f"A temperature gave a non-finite held-out loss: {scores}")
    return TemperatureSearch(tuple(scores), alpha)
