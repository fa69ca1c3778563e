"""Split held-out texts into context-length windows so that every token of every text is scored once.

Shared by perplexity/bits-per-byte and teacher-student agreement so both look at the same positions.
Each text is prefixed with the tokenizer's BOS (or EOS) token, so its first real token is predicted too;
consecutive windows overlap by one token (the last input of one window is the first of the next), so the
targets of all windows together are exactly the text's tokens.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..padding import right_pad

DEFAULT_MAX_LENGTH = 1024


@dataclass(frozen=True)
class Batch:
    """A padded batch of windows. ``target_mask[b, i]`` says whether logits[b, i] predict input_ids[b, i+1]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_mask: torch.Tensor


def resolve_max_length(model: Any, max_length: int | None) -> int:
    """The window length: the caller's, else the model's context length capped at ``DEFAULT_MAX_LENGTH``."""
    if max_length is None:
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None) or DEFAULT_MAX_LENGTH
        max_length = min(int(context), DEFAULT_MAX_LENGTH)
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 to predict anything, got {max_length}")
    return max_length


def text_token_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` preceded by one start token (BOS, else EOS) so that its first token is scored."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        warnings.warn("tokenizer has neither BOS nor EOS: the first token of each text is not scored", stacklevel=3)
        return ids
    return [start, *ids]


def split_windows(ids: Sequence[int], max_length: int) -> list[list[int]]:
    """Windows of at most ``max_length`` ids overlapping by one, whose targets cover ids[1:] exactly once."""
    if len(ids) < 2:
        return []
    step = max_length - 1
    return [list(ids[start : start + max_length]) for start in range(0, len(ids) - 1, step)]


def text_windows(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """All windows of all texts, in text order."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not a single string")
    windows: list[list[int]] = []
    for text in texts:
        windows.extend(split_windows(text_token_ids(tokenizer, text), max_length))
    return windows


def batches(windows: Sequence[list[int]], batch_size: int, pad_id: int, device: torch.device) -> Iterator[Batch]:
    """Right-padded batches, longest windows first so padding stays small."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(windows)), key=lambda index: -len(windows[index]))
    for start in range(0, len(order), batch_size):
        chunk = [windows[index] for index in order[start : start + batch_size]]
        input_ids, attention_mask = right_pad(chunk, pad_id)
        target_mask = torch.zeros_like(attention_mask, dtype=torch.bool)
        target_mask[:, :-1] = attention_mask[:, 1:].bool()
        yield Batch(input_ids.to(device), attention_mask.to(device), target_mask.to(device))


def pad_id_of(tokenizer: Any) -> int:
    """A padding id (masked out anyway): the tokenizer's PAD, else EOS, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device
