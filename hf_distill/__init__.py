"""hf_distill: knowledge distillation that drops into transformers/TRL training code."""

from .trainers import FeatureKDConfig, FeatureKDTrainer, KDConfig, KDTrainer, SeqKDConfig, SeqKDTrainer

__version__ = "0.1.0"

__all__ = [
    "FeatureKDConfig",
    "FeatureKDTrainer",
    "KDConfig",
    "KDTrainer",
    "SeqKDConfig",
    "SeqKDTrainer",
    "__version__",
]
