"""Turn a prompt dataset (plain ``prompt`` strings or conversational ``messages``) into teacher token ids.

Everything a user can get wrong about the input is checked here, before any generation starts: a long
job should not die on row 90,000 because of a prompt that was already bad at launch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .config import TeacherGenerationConfig

# Some tokenizers report a huge sentinel ``model_max_length`` when they do not know the context size.
_UNKNOWN_MAX_LENGTH = 10**9


class PromptFormat:
    """Which column holds the prompts and whether they are conversations."""

    def __init__(self, column: str, conversational: bool) -> None:
        self.column = column
        self.conversational = conversational

    def __repr__(self) -> str:
        return f"PromptFormat(column={self.column!r}, conversational={self.conversational})"


def detect_prompt_format(
    column_names: Sequence[str], first_row: Mapping[str, Any], config: TeacherGenerationConfig
) -> PromptFormat:
    """``prompt`` (a string, or a list of messages as in TRL's conversational format) or ``messages``."""
    if config.prompt_column in column_names:
        value = first_row[config.prompt_column]
        return PromptFormat(config.prompt_column, conversational=isinstance(value, list))
    if config.messages_column in column_names:
        return PromptFormat(config.messages_column, conversational=True)
    raise ValueError(
        f"the prompt dataset needs a '{config.prompt_column}' column (text or messages) or a "
        f"'{config.messages_column}' column (conversations); it has columns {list(column_names)}. "
        "Rename your column or set prompt_column / messages_column in TeacherGenerationConfig."
    )


def teacher_context_length(model: Any, tokenizer: Any) -> int | None:
    """Longest sequence (prompt + completion) the teacher was built for, if it says so."""
    config = getattr(model, "config", None)
    length = getattr(config, "max_position_embeddings", None)
    if length:
        return int(length)
    length = getattr(tokenizer, "model_max_length", None)
    if length and length < _UNKNOWN_MAX_LENGTH:
        return int(length)
    return None


def render_prompts(
    values: Sequence[Any], fmt: PromptFormat, tokenizer: Any, config: TeacherGenerationConfig, first_index: int = 0
) -> list[list[int]]:
    """Token ids the teacher continues for each prompt value; raises a clear error for bad rows."""
    texts: list[str] = []
    for offset, value in enumerate(values):
        index = first_index + offset
        if fmt.conversational:
            texts.append(_chat_text(_check_messages(value, index, fmt.column), tokenizer))
        else:
            if not isinstance(value, str):
                raise ValueError(f"row {index}: '{fmt.column}' must be a string, got {type(value).__name__}")
            if not value.strip():
                raise ValueError(f"row {index}: empty prompt in column '{fmt.column}'")
            if config.chat_template_for_prompts:
                texts.append(_chat_text([{"role": "user", "content": value}], tokenizer))
            else:
                texts.append(value)
    # A chat template already writes the special tokens (BOS etc.) the teacher expects.
    add_special = not (fmt.conversational or config.chat_template_for_prompts)
    ids = tokenizer(texts, add_special_tokens=add_special)["input_ids"] if texts else []
    for offset, prompt_ids in enumerate(ids):
        if not prompt_ids:
            raise ValueError(f"row {first_index + offset}: the prompt tokenizes to zero tokens")
    return [list(p) for p in ids]


def check_prompt_lengths(
    prompt_ids: Sequence[Sequence[int]], context: int | None, max_new_tokens: int, first_index: int = 0
) -> None:
    """Refuse prompts that leave no room for ``max_new_tokens`` inside the teacher's context."""
    if context is None:
        return
    for offset, ids in enumerate(prompt_ids):
        if len(ids) + max_new_tokens > context:
            raise ValueError(
                f"row {first_index + offset}: prompt has {len(ids)} tokens; with max_new_tokens={max_new_tokens} "
                f"that exceeds the teacher context of {context} tokens. Shorten or drop the prompt, or lower "
                "max_new_tokens."
            )


def _check_messages(value: Any, index: int, column: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"row {index}: '{column}' must be a non-empty list of messages")
    for message in value:
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise ValueError(f"row {index}: every message needs 'role' and 'content', got {message!r}")
    if value[-1]["role"] == "assistant":
        raise ValueError(
            f"row {index}: the conversation already ends with an assistant turn; drop it so the teacher "
            "writes that turn"
        )
    if not any(str(message["content"] or "").strip() for message in value):
        raise ValueError(f"row {index}: all messages are empty")
    return [dict(message) for message in value]


def _chat_text(messages: list[dict], tokenizer: Any) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "conversational prompts need the teacher tokenizer's chat template, but this tokenizer has none; "
            "set tokenizer.chat_template or pass plain-text prompts"
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
