"""Loss-weight curricula: each weight of the loss (alpha, the feature terms) may change with the optimizer step.

A schedule is written as a short string so it fits a YAML value or a JSON command-line flag:

    constant            the configured value throughout
    linear:END          straight line from the configured value to END over the training steps
    cosine:END          half a cosine wave from the configured value to END (flat at both ends)
    step:K:VALUE        the configured value for the first K optimizer steps, VALUE from then on

"0 until step k, then w" is the configured weight 0 with ``step:k:w``. Like the temperature schedule, every
value is a pure function of ``(global_step, max_steps)``, so a resumed run recomputes exactly the values of an
uninterrupted one and no schedule state needs to go into checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .schedules import scheduled_temperature

WEIGHT_SCHEDULES = ("constant", "linear", "cosine", "step")


@dataclass(frozen=True)
class WeightSchedule:
    """One parsed schedule: its kind, the value it ends at (or steps to) and, for `step`, the switch step."""

    kind: str = "constant"
    end: float | None = None
    switch_step: int | None = None

    def value(self, start: float, step: int, total_steps: int) -> float:
        """The weight at optimizer step ``step`` (completed steps so far) of ``total_steps``."""
        if self.kind == "constant" or self.end is None:
            return start
        if self.kind == "step":
            return start if step < self.switch_step else self.end
        if total_steps <= 0:
            return start
        progress = min(max(step / total_steps, 0.0), 1.0)
        if self.kind == "linear":
            return start + (self.end - start) * progress
        return self.end + 0.5 * (start - self.end) * (1.0 + math.cos(math.pi * progress))

    def values_reached(self, start: float) -> tuple[float, ...]:
        """Every value the weight can take (its extremes), to validate the range and decide what to compute."""
        return (start,) if self.end is None else (start, self.end)


def parse_weight_schedule(name: str, text: str) -> WeightSchedule:
    """``text`` (see the module docstring) as a `WeightSchedule`; a clear error names the weight when malformed."""
    parts = [part.strip() for part in str(text).split(":")]
    kind = parts[0]
    usage = "constant, linear:END, cosine:END or step:K:VALUE"
    if kind not in WEIGHT_SCHEDULES:
        raise ValueError(f"Schedule of {name} {text!r}: unknown kind {kind!r}; write {usage}.")
    expected = {"constant": 1, "linear": 2, "cosine": 2, "step": 3}[kind]
    if len(parts) != expected:
        raise ValueError(f"Schedule of {name} {text!r} has the wrong number of fields; write {usage}.")
    if kind == "constant":
        return WeightSchedule()
    try:
        end = float(parts[-1])
        switch = int(parts[1]) if kind == "step" else None
    except ValueError:
        raise ValueError(f"Schedule of {name} {text!r}: the fields must be numbers; write {usage}.") from None
    if switch is not None and switch < 0:
        raise ValueError(f"Schedule of {name} {text!r}: the switch step must be >= 0.")
    return WeightSchedule(kind, end, switch)


def parse_weight_schedules(
    schedules: Mapping[str, str] | None, checks: Mapping[str, Callable[[str, float], None]], config: Any
) -> dict[str, WeightSchedule]:
    """All schedules of a config, validated: known weight names, parseable, every reached value in range.

    ``checks`` maps each schedulable weight to its range check (e.g. alpha in [0, 1]); ``config`` supplies the
    configured (start) values.
    """
    parsed: dict[str, WeightSchedule] = {}
    for name, text in dict(schedules or {}).items():
        if name not in checks:
            known = ", ".join(checks) or "none"
            raise ValueError(f"loss_weight_schedules names {name!r}, which is not a schedulable weight here ({known}).")
        schedule = parse_weight_schedule(name, text)
        for value in schedule.values_reached(getattr(config, name)):
            checks[name](name, value)
        parsed[name] = schedule
    return parsed


def loss_settings_at(config: Any, step: int, total_steps: int) -> dict[str, float]:
    """The temperature and every schedulable weight of ``config`` at ``step`` of ``total_steps``."""
    settings = {
        "temperature": scheduled_temperature(
            config.temperature_schedule, config.temperature, config.temperature_end, step, total_steps
        )
    }
    schedules = config.weight_schedules()
    for name in config.schedulable_weights():
        settings[name] = schedules.get(name, WeightSchedule()).value(getattr(config, name), step, total_steps)
    return settings
