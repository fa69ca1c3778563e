"""Range checks for float settings that refuse NaN and infinity as well as out-of-range values.

Written as positive tests (``math.isfinite(x) and x > 0``) because a comparison such as ``x < 0`` is False for
NaN, which is how a NaN weight or an infinite temperature used to pass construction and fail (or train at a
NaN loss) later, with a message that blamed something else.
"""

from __future__ import annotations

import math


def _number(name: str, value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value}.")
    return number


def require_positive(name: str, value: float) -> None:
    """``value`` must be finite and > 0 (a temperature)."""
    if not _number(name, value) > 0:
        raise ValueError(f"{name} must be > 0, got {value}.")


def require_non_negative(name: str, value: float) -> None:
    """``value`` must be finite and >= 0 (a loss weight)."""
    if not _number(name, value) >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}.")


def require_in_range(name: str, value: float, low: float, high: float, high_inclusive: bool = True) -> None:
    """``value`` must be finite and in [low, high] (or [low, high) without ``high_inclusive``)."""
    number = _number(name, value)
    inside = low <= number <= high if high_inclusive else low <= number < high
    if not inside:
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value}.")
