"""Offline access to real small models installed from PyPI."""

from hf_distill.models.offline import (
    ModelPackageMissingError,
    cache_root,
    gemma3_270m_dir,
    smollm2_135m_instruct_dir,
)

__all__ = ["ModelPackageMissingError", "cache_root", "gemma3_270m_dir", "smollm2_135m_instruct_dir"]
