"""Trainers (thin `transformers.Trainer` subclasses) and their configs."""

from .cotrained_config import MutualKDConfig, OnlineKDConfig
from .cotrained_trainer import MutualKDTrainer, OnlineKDTrainer
from .feature_config import FeatureKDConfig
from .feature_trainer import FeatureKDTrainer
from .kd_config import KDConfig
from .kd_trainer import KDTrainer
from .mtp_config import MTPConfig
from .mtp_trainer import MTPTrainer
from .seqkd_config import SeqKDConfig
from .seqkd_trainer import SeqKDTrainer

__all__ = [
    "FeatureKDConfig",
    "FeatureKDTrainer",
    "KDConfig",
    "KDTrainer",
    "MTPConfig",
    "MTPTrainer",
    "MutualKDConfig",
    "MutualKDTrainer",
    "OnlineKDConfig",
    "OnlineKDTrainer",
    "SeqKDConfig",
    "SeqKDTrainer",
]
