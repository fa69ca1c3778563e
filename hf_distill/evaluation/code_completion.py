"""Next-line code completion: a score that even a small model can move.

From held-out Python files we take (context, next line) pairs: the context is the file up to the end of the
line before the target, *without* its newline, and the target is the following line. Stopping the context
before the newline matters for BPE tokenizers: code tokenizers merge a newline with the next line's
indentation, so a context ending in a bare newline token is an unnatural boundary that makes models
predict blank lines. The model greedily generates; the text between the first and second newline it
produces is the predicted line. Scores compare the stripped predicted and target lines: exact match, and
edit similarity = 1 - Levenshtein(pred, target) / max(len(pred), len(target)) (character level,
insert/delete/substitute cost 1; 1.0 for two empty strings).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import evaluate
import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList


@dataclass(frozen=True)
class NextLinePair:
    """One example: ``context`` (file text up to the end of a line, no newline) and the ``target`` line after it."""

    context: str
    target: str
    source: str = ""
    line_number: int = 0


def levenshtein_distance(a: str, b: str) -> int:
    """Minimum number of single-character insertions, deletions and substitutions turning a into b."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def edit_similarity(prediction: str, target: str) -> float:
    """1 - normalised Levenshtein distance, in [0, 1]."""
    longest = max(len(prediction), len(target))
    return 1.0 if longest == 0 else 1.0 - levenshtein_distance(prediction, target) / longest


def score_next_lines(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean exact match and edit similarity of stripped lines."""
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("next-line scores need at least one example")
    pairs = [(p.strip(), r.strip()) for p, r in zip(predictions, references)]
    return {
        "exact_match": sum(p == r for p, r in pairs) / len(pairs),
        "edit_similarity": sum(edit_similarity(p, r) for p, r in pairs) / len(pairs),
        "num_examples": len(pairs),
    }


def _is_candidate(line: str, min_line_chars: int) -> bool:
    stripped = line.strip()
    return len(stripped) >= min_line_chars and not stripped.startswith("#")


def build_next_line_pairs(
    sources: Mapping[str, str] | Sequence[str],
    *,
    pairs_per_file: int = 8,
    max_pairs: int | None = None,
    min_context_lines: int = 3,
    min_line_chars: int = 4,
    max_context_chars: int = 4000,
    seed: int = 0,
) -> list[NextLinePair]:
    """Sample up to ``pairs_per_file`` (context, next line) pairs per file, deterministically from ``seed``.

    Target lines are non-blank, non-comment lines of at least ``min_line_chars`` characters after at least
    ``min_context_lines`` lines; the context keeps the last ``max_context_chars`` characters before the
    newline that ends the previous line.
    """
    if min_context_lines < 1:
        raise ValueError(
            f"min_context_lines must be >= 1 (the context is the text before the line), got {min_context_lines}"
        )
    named = sources.items() if isinstance(sources, Mapping) else ((str(i), s) for i, s in enumerate(sources))
    rng = random.Random(seed)
    pairs: list[NextLinePair] = []
    for name, text in named:
        lines = text.splitlines(keepends=True)
        offsets = [0]
        for line in lines:
            offsets.append(offsets[-1] + len(line))
        eligible = [i for i in range(min_context_lines, len(lines)) if _is_candidate(lines[i], min_line_chars)]
        for index in sorted(rng.sample(eligible, min(pairs_per_file, len(eligible)))):
            end = offsets[index] - len(lines[index - 1]) + len(lines[index - 1].rstrip("\r\n"))
            context = text[max(0, end - max_context_chars) : end]
            pairs.append(NextLinePair(context, lines[index].rstrip("\r\n"), name, index + 1))
    return pairs[:max_pairs] if max_pairs is not None else pairs


@torch.no_grad()
def complete_next_lines(
    model: Any,
    tokenizer: Any,
    contexts: Sequence[str],
    *,
    max_new_tokens: int = 48,
    max_context_tokens: int = 512,
    batch_size: int = 8,
    show_progress: bool = True,
) -> list[str]:
    """Greedy prediction of the line after each context (which ends where a line ends, without newline).

    The model continues the context; its text between the first and the second newline is the predicted line
    ("" if it produces no newline within ``max_new_tokens``). Contexts are cut to their last
    ``max_context_tokens`` tokens and left-padded for batched generation.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer needs a pad or eos token for batched generation")
    predictions: list[str] = []
    try:
        for start in tqdm(range(0, len(contexts), batch_size), desc="next-line completion", disable=not show_progress):
            encoded = [
                list(tokenizer(c, add_special_tokens=False)["input_ids"])[-max_context_tokens:]
                for c in contexts[start : start + batch_size]
            ]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
            for row, ids in enumerate(encoded):
                if ids:
                    input_ids[row, width - len(ids) :] = torch.tensor(ids)
                    attention_mask[row, width - len(ids) :] = 1
            generated = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
                stopping_criteria=StoppingCriteriaList([_LinesDone(tokenizer, width)]),
            )
            for ids, new_ids in zip(encoded, generated[:, width:].tolist()):
                predictions.append(_predicted_line(tokenizer, ids, new_ids, pad_id))
    finally:
        model.train(was_training)
    return predictions


class _LinesDone(StoppingCriteria):
    """Stops each row once its generated text holds two newlines (the predicted line is then complete)."""

    def __init__(self, tokenizer: Any, prompt_width: int) -> None:
        self.tokenizer, self.prompt_width = tokenizer, prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width :], skip_special_tokens=True)
        return torch.tensor([text.count("\n") >= 2 for text in texts], device=input_ids.device)


def _predicted_line(tokenizer: Any, context_ids: list[int], new_ids: list[int], pad_id: int) -> str:
    """The text the continuation adds to the context, between its first and second newline."""
    while new_ids and new_ids[-1] == pad_id:  # finished rows are padded
        new_ids = new_ids[:-1]
    context_text = tokenizer.decode(context_ids, skip_special_tokens=True)
    full_text = tokenizer.decode(context_ids + new_ids, skip_special_tokens=True)
    continuation = (
        full_text[len(context_text) :]
        if full_text.startswith(context_text)
        else tokenizer.decode(new_ids, skip_special_tokens=True)
    )
    parts = continuation.split("\n", 2)
    return parts[1] if len(parts) > 1 else ""


def evaluate_next_line_completion(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[NextLinePair],
    **generation_kwargs: Any,
) -> dict[str, float]:
    """Generate the next line for every pair and score it (see ``score_next_lines``)."""
    predictions = complete_next_lines(model, tokenizer, [pair.context for pair in pairs], **generation_kwargs)
    return score_next_lines(predictions, [pair.target for pair in pairs])


_DESCRIPTION = """
Next-line code completion: exact match and edit similarity (1 - normalised character Levenshtein distance)
between predicted and reference lines, both stripped of surrounding whitespace.
"""

_INPUTS = """
Args:
    predictions: predicted lines. references: reference lines.
Returns:
    {"exact_match", "edit_similarity", "num_examples"}
"""


class NextLineCompletion(evaluate.Metric):
    """Exact match and edit similarity of predicted next lines."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        return score_next_lines(predictions, references)
