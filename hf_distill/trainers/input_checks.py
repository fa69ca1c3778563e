"""Checks of a trainer's inputs that would otherwise fail deep inside TRL/transformers, or train silently.

Each function is called once from a trainer's ``__init__`` (before or after ``SFTTrainer.__init__``, as its
name says) and either raises an error that names the argument and what to do, or logs a warning.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

_NO_TARGET_CAUSES = (
    "completion_only_loss / assistant_only_loss with examples that have no completion or assistant text (or a chat "
    "template without {% generation %} markers), prompts that fill max_length so truncation cut every completion "
    "off, or a `labels` column that is -100 everywhere"
)


def _length(dataset: Any) -> int | None:
    """Row count of a map-style dataset, None for iterable/streaming ones."""
    try:
        return len(dataset)
    except TypeError:
        return None


def check_before_sft_init(model: Any, args: Any, train_dataset: Any, processing_class: Any) -> None:
    """What SFTTrainer.__init__ would trip over with an unhelpful error, or would silently ignore."""
    if train_dataset is not None and _length(train_dataset) == 0:
        raise ValueError(
            "train_dataset is empty (0 rows): there is nothing to train on. Check the split, and any filter or "
            "select that ran before the trainer."
        )
    _check_processing_class(model, processing_class)
    _warn_ignored_completion_mask(args, train_dataset)


def _check_processing_class(model: Any, processing_class: Any) -> None:
    # SFTTrainer loads a missing processing class from the model's name (`config._name_or_path`); a model built
    # from a config has none, and the Hub client then fails on the empty repo id.
    if processing_class is not None or isinstance(model, str):
        return
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    if name:
        return
    raise ValueError(
        "processing_class is required: the student model was built from a config, so it has no name to load its "
        "tokenizer from (`model.config._name_or_path` is empty). TRL's SFTTrainer, which KDTrainer extends, needs "
        "a tokenizer even for pre-tokenized data with a data collator (pad and EOS tokens, dataset preparation), "
        "and KDTrainer uses it to check that the teacher shares the student's vocabulary. Pass "
        "processing_class=<the tokenizer your input_ids came from>."
    )


def _warn_ignored_completion_mask(args: Any, train_dataset: Any) -> None:
    # TRL's rule: completion_only_loss=None enables it only for prompt/completion datasets, so a pre-tokenized
    # dataset's `completion_mask` is then dropped and every token becomes a target.
    columns = getattr(train_dataset, "column_names", None) or []
    if args.completion_only_loss is None and "completion_mask" in columns and "labels" not in columns:
        logger.warning(
            "train_dataset has a `completion_mask` column, but completion_only_loss is not set, so (as in TRL's "
            "SFTTrainer) the mask is ignored and prompt tokens are trained on too. Set completion_only_loss=True to "
            "train on completion tokens only, or completion_only_loss=False to silence this warning."
        )


def check_after_sft_init(prepared_dataset: Any, train_dataset: Any) -> None:
    """The dataset SFTTrainer prepared from `train_dataset`: not emptied, and with at least one target token."""
    if prepared_dataset is None:
        return
    rows = _length(prepared_dataset)
    if rows == 0:
        raise ValueError(
            f"train_dataset has {_length(train_dataset)} rows, but none is left after SFT's preparation: TRL drops "
            f"examples with no target token after truncation to max_length. Likely causes: {_NO_TARGET_CAUSES}."
        )
    if rows is not None and not _has_target_token(prepared_dataset):
        logger.warning(
            "train_dataset has no target tokens: every label is -100 after SFT's preparation, so the loss is 0 "
            f"and nothing is learned. Likely causes: {_NO_TARGET_CAUSES}."
        )


def _has_target_token(dataset: Any) -> bool:
    """Whether any label is not -100 (True when the dataset has no `labels` column to look at)."""
    if "labels" not in (getattr(dataset, "column_names", None) or []):
        return True
    import pyarrow.compute as pc

    labels = pc.list_flatten(dataset.with_format("arrow")["labels"])  # respects select/shuffle indices
    return bool(pc.any(pc.not_equal(labels, -100)).as_py())
