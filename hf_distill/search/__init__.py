"""Choosing distillation settings: the held-out KD loss of the current student over a list of temperatures."""

from .temperature import TemperatureScore, TemperatureSearch, find_temperature

__all__ = ["TemperatureScore", "TemperatureSearch", "find_temperature"]
