"""Temperature schedules: start soft (high T) and sharpen towards the end of training."""

from __future__ import annotations

import math

TEMPERATURE_SCHEDULES = ("constant", "linear", "cosine")


def scheduled_temperature(schedule: str, start: float, end: float | None, step: int, total_steps: int) -> float:
    """Temperature at `step` of `total_steps` moving from `start` to `end`.

    linear: straight line; cosine: half a cosine wave, flat at both ends. `constant` (or no `end`) keeps
    `start`. Past the last step the end value holds.
    """
    if schedule not in TEMPERATURE_SCHEDULES:
        choices = ", ".join(TEMPERATURE_SCHEDULES)
        raise ValueError(f"Unknown temperature schedule {schedule!r}; choose one of {choices}.")
    if schedule == "constant" or end is None or total_steps <= 0:
        return start
    progress = min(max(step / total_steps, 0.0), 1.0)
    if schedule == "linear":
        return start + (end - start) * progress
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))
