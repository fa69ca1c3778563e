"""Questions every trainer and teacher asks of a causal LM, answered once.

One copy each of: unwrapping PEFT, the text config of a multimodal model, the vocabulary-row count (also for a
DeepSpeed ZeRO-3 partitioned weight), whether logits can be formed from hidden states and the `lm_head` (the
"fused head"), the final hidden states, and the context-length check.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

# Config attributes through which a model post-processes its logits after `hidden @ lm_head.T`.
LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier")


def core_model(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (LoRA layers stay injected in it)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def text_config(model: nn.Module) -> Any:
    """The language model's config (multimodal configs nest it), or None for a bare module."""
    config = getattr(core_model(model), "config", None)
    if config is None:
        return None
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def weight_rows(weight: Tensor) -> int:
    """Row count of a weight, also when DeepSpeed ZeRO-3 has partitioned it (its local shape is then empty)."""
    return int(getattr(weight, "ds_shape", weight.shape)[0])


def vocab_rows(model: nn.Module) -> int | None:
    """Width of the model's logits: the rows of its output embedding (None when it has none)."""
    core = core_model(model)
    head = core.get_output_embeddings() if hasattr(core, "get_output_embeddings") else None
    return None if head is None else weight_rows(head.weight)


def overrides_forward(model: nn.Module) -> bool:
    """Whether a subclass (or an instance patch) replaces the transformers class's own `forward`.

    Such a model may post-process its logits in ways the fused head, which calls the backbone and the `lm_head`
    directly, would skip.
    """
    core = core_model(model)
    patched = vars(core).get("forward")
    if patched is not None:
        # Libraries wrap an instance's forward (accelerate's autocast, ...) with functools.wraps: what matters is
        # whether the innermost function is still the class's own.
        inner = inspect.unwrap(getattr(patched, "__func__", patched))
        if inner is not inspect.unwrap(getattr(type(core), "forward", None) or (lambda: None)):
            return True
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        return False
    owner = next((cls for cls in type(core).__mro__ if "forward" in vars(cls)), None)
    if owner is None:
        return False
    # The defining class must be an architecture: transformers' own (e.g. LlamaForCausalLM) or a Hub model's
    # remote code, not a user subclass or wrapper.
    architecture = owner.__module__.startswith(("transformers.", "transformers_modules."))
    return not (issubclass(owner, PreTrainedModel) and architecture)


def fused_head_obstacle(model: nn.Module) -> str | None:
    """Why logits cannot be formed as `hidden @ lm_head.weight.T (+ bias)` a chunk at a time; None if they can."""
    core = core_model(model)
    config = text_config(model)
    if config is None or not hasattr(core, "get_output_embeddings") or not hasattr(core, "base_model"):
        return "it is not a transformers causal LM with an output embedding"
    post = [attr for attr in LOGIT_POSTPROCESSING if getattr(config, attr, None) not in (None, 1, 1.0)]
    if post:
        return f"its config post-processes logits ({', '.join(post)})"
    if overrides_forward(model):
        return f"{type(core).__name__} overrides `forward`, which may post-process the logits"
    head = core.get_output_embeddings()
    if not isinstance(head, nn.Linear):
        return f"its output embedding is a {type(head).__name__}, not a plain Linear"
    if head.weight.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return f"its lm_head weight is stored as {head.weight.dtype} (quantized)"
    return None


def supports_fused_head(model: nn.Module) -> bool:
    """Whether logits are exactly `hidden @ lm_head.weight.T (+ bias)`, so they can be formed per chunk."""
    return fused_head_obstacle(model) is None


def lm_head(model: nn.Module) -> nn.Linear:
    """The output projection of a causal LM (through PEFT)."""
    return core_model(model).get_output_embeddings()


def final_hidden_states(model: nn.Module, model_inputs: dict[str, Tensor]) -> Tensor:
    """Final hidden states (after the last norm), i.e. what the `lm_head` sees."""
    backbone = core_model(model).base_model
    return backbone(**model_inputs, use_cache=False).last_hidden_state


def check_context_length(model: nn.Module, length: int, role: str = "teacher", setting: str = "max_length") -> None:
    """Refuse sequences longer than the model's positional range instead of silently degrading."""
    config = text_config(model)
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and length > limit:
        raise ValueError(
            f"A batch of {length} tokens exceeds the {role}'s context of {limit} tokens; set `{setting}` to at most "
            f"that, or `check_teacher_context=False` if the {role} extrapolates."
        )
