"""hf_distill: knowledge distillation that drops into transformers/TRL training code."""

__version__ = "0.1.0"
