"""hf_distill: knowledge distillation that drops into transformers/TRL training code."""

from .trainers import KDConfig, KDTrainer

__version__ = "0.1.0"

__all__ = ["KDConfig", "KDTrainer", "__version__"]
