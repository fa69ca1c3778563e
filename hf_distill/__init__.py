"""hf_distill: knowledge distillation that drops into transformers/TRL training code."""

__version__ = "0.1.0"  # defined before the imports below: submodules record it in their metadata

from .trainers import (  # noqa: E402
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
