"""Trainers (thin `transformers.Trainer` subclasses) and their configs."""

from .kd_config import KDConfig
from .kd_trainer import KDTrainer

__all__ = ["KDConfig", "KDTrainer"]
