"""Trainers (thin `transformers.Trainer` subclasses) and their configs."""

from .feature_config import FeatureKDConfig
from .feature_trainer import FeatureKDTrainer
from .kd_config import KDConfig
from .kd_trainer import KDTrainer

__all__ = ["FeatureKDConfig", "FeatureKDTrainer", "KDConfig", "KDTrainer"]
