"""hf_distill: knowledge distillation that drops into transformers/TRL training code."""

from ._version import __version__
from .trainers import (
    FeatureKDConfig,
    FeatureKDTrainer,
    KDConfig,
    KDTrainer,
    SeqKDConfig,
    SeqKDTrainer,
)

__all__ = [
    "FeatureKDConfig",
    "FeatureKDTrainer",
    "KDConfig",
    "KDTrainer",
    "SeqKDConfig",
    "SeqKDTrainer",
    "__version__",
]
