"""Batches for the plain-`Trainer` CE-only baseline: pre-tokenized rows padded by position, not by token id.

Masking the labels by position (rather than every ``pad_token_id``) keeps real end-of-text tokens in the loss when a
tokenizer pads with its EOS token, so the plain `Trainer` baseline scores exactly the tokens SFTTrainer scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..padding import right_pad

IGNORE_INDEX = -100
# Columns with which SFTTrainer restricts the loss to some tokens; the plain-Trainer baseline has no such notion.
LOSS_MASK_COLUMNS = ("completion_mask", "assistant_masks", "labels")


class PaddedCausalLMCollator:
    """Right-pads ``input_ids`` rows to the longest in the batch; labels are the ids with padding set to -100."""

    def __init__(self, pad_token_id: int | None) -> None:
        if pad_token_id is None:
            raise ValueError("the tokenizer has no pad token: set tokenizer.pad_token (for example to its EOS token)")
        self.pad_token_id = pad_token_id

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [list(feature["input_ids"]) for feature in features]
        if any(not row for row in rows):
            raise ValueError("an empty input_ids row cannot be trained on")
        input_ids, attention_mask = right_pad(rows, self.pad_token_id)
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def check_pretokenized(dataset: Any) -> None:
    """The plain-Trainer baseline trains on token ids only; raw text or chat rows need SFTTrainer's processing."""
    columns = getattr(dataset, "column_names", None) or []
    masks = [name for name in columns if name in LOSS_MASK_COLUMNS]
    if masks:
        raise ValueError(
            f"ce_baseline_trainer=trainer trains on every token, but the rows carry loss masks {masks} that it would "
            "ignore; use ce_baseline_trainer=sft, which honours them"
        )
    if "input_ids" not in columns:
        raise ValueError(
            f"ce_baseline_trainer=trainer needs pre-tokenized rows with an input_ids column, got columns {columns}; "
            "use ce_baseline_trainer=sft for text or conversational datasets"
        )
