"""Capture the hidden states and attention maps of selected decoder layers with forward hooks.

Why hooks rather than ``output_hidden_states=True``: only the mapped layers' tensors are kept, the
model's forward signature is untouched (so the logit-KD code path runs unchanged), and in transformers 5
decoder-layer hooks sit outside gradient checkpointing (``forward`` is checkpointed, not ``__call__``),
so captured student states keep their autograd graph.

Attention weights are only returned by eager attention (sdpa / flash kernels return ``None``);
``ensure_eager_attention`` switches a model to eager or refuses clearly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

_ATTENTION_ATTRS = ("self_attn", "attention", "attn")
_WEIGHTLESS_HINT = (
    "Attention distillation needs attention weights, which only eager attention returns. Load the model with "
    "attn_implementation='eager' or let the trainer switch it (feature_switch_to_eager=True)."
)


def _text_config(model: nn.Module):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def num_decoder_layers(model: nn.Module) -> int:
    """Number of decoder layers of a (possibly PEFT-wrapped) causal LM, from its config."""
    return int(_text_config(model).num_hidden_layers)


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList holding the decoder layers (``model.model.layers`` for Llama-style models)."""
    n_layers = num_decoder_layers(model)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] == "layers" and len(module) == n_layers:
            return module
    raise ValueError(
        f"Could not find a '*.layers' ModuleList with {n_layers} decoder layers in {type(model).__name__}; "
        "feature distillation supports decoder-only models with the usual transformers layout."
    )


def attention_module(layer: nn.Module, layer_index: int) -> nn.Module:
    """The self-attention submodule of one decoder layer."""
    for attr in _ATTENTION_ATTRS:
        module = getattr(layer, attr, None)
        if isinstance(module, nn.Module):
            return module
    raise ValueError(f"Decoder layer {layer_index} ({type(layer).__name__}) has no self-attention submodule.")


def attention_implementation(model: nn.Module) -> str:
    return str(getattr(model.config, "_attn_implementation", None) or "eager")


def ensure_eager_attention(model: nn.Module, switch: bool, role: str) -> None:
    """Make ``model`` use eager attention, or raise if switching is not allowed."""
    implementation = attention_implementation(model)
    if implementation == "eager":
        return
    if not switch:
        raise ValueError(
            f"The {role} uses attention implementation {implementation!r}, which returns no attention weights. "
            + _WEIGHTLESS_HINT
        )
    logger.warning(
        "Switching the %s from %r to eager attention so attention maps can be distilled (slower, more memory).",
        role,
        implementation,
    )
    model.set_attn_implementation("eager")


class LayerCapture:
    """Forward hooks that record the outputs of chosen decoder layers while ``capturing()`` is active."""

    def __init__(self, model: nn.Module, layers: Iterable[int], hidden: bool = True, attention: bool = False):
        self._hidden: dict[int, list[Tensor]] = {}
        self._attention: dict[int, list[Tensor]] = {}
        self._active = False
        self._handles = []
        decoder_layers = find_decoder_layers(model)
        self.layers = tuple(sorted(set(layers)))
        for index in self.layers:
            if not 0 <= index < len(decoder_layers):
                raise ValueError(f"Layer {index} is outside the model's layers 0..{len(decoder_layers) - 1}.")
            layer = decoder_layers[index]
            if hidden:
                self._handles.append(layer.register_forward_hook(self._hidden_hook(index)))
            if attention:
                module = attention_module(layer, index)
                self._handles.append(module.register_forward_hook(self._attention_hook(index)))

    def _hidden_hook(self, index: int):
        def hook(module: nn.Module, args, output) -> None:
            if self._active:
                state = output[0] if isinstance(output, tuple) else output
                self._hidden.setdefault(index, []).append(state)

        return hook

    def _attention_hook(self, index: int):
        def hook(module: nn.Module, args, output) -> None:
            if not self._active:
                return
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise RuntimeError(f"Layer {index}'s attention returned no weights. " + _WEIGHTLESS_HINT)
            self._attention.setdefault(index, []).append(weights)

        return hook

    @contextmanager
    def capturing(self) -> Iterator[LayerCapture]:
        """Record during the block; captured tensors stay available until ``clear()``.

        Calls of the model inside the block (e.g. a teacher run in micro-batches) are appended in order.
        """
        self.clear()
        self._active = True
        try:
            yield self
        finally:
            self._active = False

    def hidden_state(self, index: int) -> Tensor:
        """Output of decoder layer ``index``; calls split over micro-batches are joined along the batch."""
        return self._joined(self._hidden, index, "hidden state")

    def attention(self, index: int) -> Tensor:
        """Attention probabilities (batch, heads, query, key) of decoder layer ``index``."""
        return self._joined(self._attention, index, "attention map")

    @staticmethod
    def _joined(store: dict[int, list[Tensor]], index: int, what: str) -> Tensor:
        parts = store.get(index)
        if not parts:
            raise RuntimeError(f"No {what} was captured for layer {index}: did the model run inside capturing()?")
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)

    def clear(self) -> None:
        """Drop captured tensors (and the activations they keep alive)."""
        self._hidden.clear()
        self._attention.clear()

    def remove(self) -> None:
        """Unregister all hooks."""
        self.clear()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
