"""A callback that warns, once per symptom and with the numbers, when the logged diagnostics say a run is wrong.

The rules read the training logs' ``diag_*`` values (see `KDTrainer.log`) over the last ``window`` logs:

* KL rising: the least-squares slope is positive and the window's second half averages more than
  ``1 + kl_rise`` times its first half (one noisy log is not enough);
* agreement flat: top-1 agreement moved less than ``flat_agreement`` over the window while below
  ``agreement_ceiling`` (a student that already agrees may plateau);
* correlation low: the teacher/student probability correlation stayed below ``min_correlation`` for the
  whole window (0.8 is the usual rule of thumb) and is not climbing (the second half of the window gains less
  than ``min_correlation_gain`` on the first: a student that starts far from its teacher is low but improving);
* entropy collapse: the student's entropy fell below ``collapse_ratio`` times the teacher's while the teacher
  is not itself near-deterministic.

`check_history` is the pure part (a list of log dicts in, messages out), so it is tested without a Trainer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

PREFIX = "diag_"


@dataclass(frozen=True)
class WatchThresholds:
    """When the diagnostics count as a symptom (see the module docstring)."""

    window: int = 5
    kl_rise: float = 0.25
    flat_agreement: float = 0.01
    agreement_ceiling: float = 0.9
    min_correlation: float = 0.8
    min_correlation_gain: float = 0.02
    collapse_ratio: float = 0.25
    min_teacher_entropy_bits: float = 0.5

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"window must be >= 2 logs, got {self.window}.")


def _series(history: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [float(entry[PREFIX + key]) for entry in history if PREFIX + key in entry]


def _slope(values: Sequence[float]) -> float:
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    return sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values)) / sum((i - mean_x) ** 2 for i in range(n))


def _halves(values: Sequence[float]) -> tuple[float, float]:
    """Means of the first and the last half of ``values`` (the middle one is left out when odd)."""
    half = len(values) // 2
    return sum(values[:half]) / half, sum(values[-half:]) / half


def check_history(history: Sequence[Mapping[str, Any]], thresholds: WatchThresholds) -> dict[str, str]:
    """{symptom: message} for every rule the last ``window`` diagnostic logs of ``history`` break."""
    w = thresholds.window
    found: dict[str, str] = {}
    kl = _series(history, "kl")[-w:]
    if len(kl) == w:
        first, second = _halves(kl)
        if _slope(kl) > 0 and second > (1 + thresholds.kl_rise) * first:
            found["kl_rising"] = (
                f"KL(teacher || student) is rising over the last {w} logs: {_fmt(kl)} nats. The student is moving "
                "away from the teacher; check the learning rate and the loss weights."
            )
    agreement = _series(history, "top1_agreement")[-w:]
    if len(agreement) == w and max(agreement) - min(agreement) < thresholds.flat_agreement:
        if max(agreement) < thresholds.agreement_ceiling:
            found["agreement_flat"] = (
                f"Top-1 agreement with the teacher is flat over the last {w} logs: {_fmt(agreement)} (moved less "
                f"than {thresholds.flat_agreement}). The student has stopped learning the teacher."
            )
    correlation = _series(history, "prob_correlation")[-w:]
    if len(correlation) == w and max(correlation) < thresholds.min_correlation:
        first, second = _halves(correlation)
        if second - first < thresholds.min_correlation_gain:
            found["correlation_low"] = (
                f"Teacher/student probability correlation stayed below {thresholds.min_correlation} and is not "
                f"climbing over the last {w} logs: {_fmt(correlation)}."
            )
    student_h, teacher_h = _series(history, "student_entropy_bits"), _series(history, "teacher_entropy_bits")
    if student_h and teacher_h and teacher_h[-1] >= thresholds.min_teacher_entropy_bits:
        if student_h[-1] < thresholds.collapse_ratio * teacher_h[-1]:
            found["entropy_collapse"] = (
                f"Student entropy collapsed: {student_h[-1]:.4g} bits against the teacher's {teacher_h[-1]:.4g} "
                f"(below {thresholds.collapse_ratio} x). The student is over-confident, often a learning rate far "
                "too high."
            )
    return found


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


class DiagnosticsWatch(TrainerCallback):
    """Warns once per symptom (logger warning) when the training logs' diagnostics look wrong.

    The messages it has emitted are kept in ``warnings`` ({symptom: message}), e.g. for a test or a report.
    """

    def __init__(self, thresholds: WatchThresholds | None = None) -> None:
        self.thresholds = thresholds or WatchThresholds()
        self.history: list[dict[str, float]] = []
        self.warnings: dict[str, str] = {}

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any):
        entry = {key: value for key, value in (logs or {}).items() if key.startswith(PREFIX)}
        if not entry:
            return
        self.history.append(entry)
        for symptom, message in check_history(self.history, self.thresholds).items():
            if symptom not in self.warnings:
                self.warnings[symptom] = message
                logger.warning("Distillation diagnostics, step %s: %s", state.global_step, message)
