"""When a stage ends before its step cap: a plateau of held-out loss, or the held-out KL to its teacher low enough.

The rules are pure functions of the Trainer's ``log_history`` (which checkpoints store), so a resumed stage takes
exactly the decisions an uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback


@dataclass(frozen=True)
class StopRules:
    """Early stops of a stage; with none set the stage runs its ``max_steps`` (the fixed-step rule).

    ``eval_steps``: held-out evaluation every this many steps (needed by the other two rules).
    ``plateau_patience``: stop once this many evaluations in a row did not lower the best held-out loss by more
    than ``plateau_min_delta``. ``kl_below``: stop once the held-out KL(teacher || student) (at the stage's
    temperature, per target token) is at most this value.
    """

    eval_steps: int | None = None
    plateau_patience: int | None = None
    plateau_min_delta: float = 0.0
    kl_below: float | None = None

    def __post_init__(self) -> None:
        for name in ("eval_steps", "plateau_patience"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"stop.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.plateau_min_delta, (int, float)) or not 0 <= self.plateau_min_delta < math.inf:
            raise ValueError(f"stop.plateau_min_delta must be a finite number >= 0, got {self.plateau_min_delta!r}")
        if self.kl_below is not None and (
            not isinstance(self.kl_below, (int, float)) or not 0 < self.kl_below < math.inf
        ):
            raise ValueError(f"stop.kl_below must be a finite number > 0, got {self.kl_below!r}")
        if (self.plateau_patience or self.kl_below) and self.eval_steps is None:
            raise ValueError("stop.plateau_patience and stop.kl_below need stop.eval_steps (how often to evaluate)")

    @property
    def needs_eval(self) -> bool:
        return self.eval_steps is not None


def stop_reason(rules: StopRules, log_history: Sequence[dict[str, Any]]) -> str | None:
    """Why the stage should stop now, judged on the evaluations in ``log_history``; None to go on."""
    evals = [entry for entry in log_history if "eval_loss" in entry]
    if not evals:
        return None
    last = evals[-1]
    kl = last.get("eval_teacher_kl")
    if rules.kl_below is not None and kl is not None and kl <= rules.kl_below:
        return f"held-out KL to the teacher {kl:.4g} <= {rules.kl_below} at step {last.get('step')}"
    if rules.plateau_patience:
        best, best_step, since = math.inf, None, 0
        for entry in evals:
            if entry["eval_loss"] < best - rules.plateau_min_delta:
                best, best_step, since = entry["eval_loss"], entry.get("step"), 0
            else:
                since += 1
        if since >= rules.plateau_patience:
            return (
                f"held-out loss plateau: {since} evaluations without improving on {best:.4g} (step {best_step}) "
                f"by more than {rules.plateau_min_delta}"
            )
    return None


class StopRulesCallback(TrainerCallback):
    """Ends training (and checkpoints that step) when `stop_reason` says so after an evaluation."""

    def __init__(self, rules: StopRules) -> None:
        self.rules = rules
        self.reason: str | None = None

    def on_evaluate(self, args, state, control, **kwargs):
        self.reason = stop_reason(self.rules, state.log_history)
        if self.reason is not None:
            control.should_training_stop = True
            control.should_save = args.save_strategy != "no"  # a resumed run must find the stop it made
        return control
