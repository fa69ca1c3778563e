"""Held-out perplexity and bits per byte of a causal LM, as a function and an ``evaluate.Metric``.

Perplexity depends on the tokenizer; bits per byte does not: it divides the total negative log-likelihood
(nats, converted to bits) by the UTF-8 byte count of the scored text, so models with different vocabularies
can be compared on the same texts. Logits come from one forward per batch of context-length windows
(see ``token_windows``); the log-softmax is taken in float32, a chunk of tokens at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import datasets
import evaluate
import torch
from tqdm.auto import tqdm

from hf_distill.evaluation.token_windows import (
    batches,
    model_device,
    pad_id_of,
    resolve_max_length,
    text_windows,
)


def perplexity_from_counts(nll_nats: float, num_tokens: int, num_bytes: int) -> dict[str, float]:
    """Perplexity = exp(NLL / tokens); bits per byte = NLL / ln 2 / bytes."""
    if num_tokens <= 0 or num_bytes <= 0:
        raise ValueError(f"need scored tokens and bytes, got num_tokens={num_tokens}, num_bytes={num_bytes}")
    return {
        "perplexity": math.exp(nll_nats / num_tokens),
        "bits_per_byte": nll_nats / math.log(2) / num_bytes,
        "nll_per_token": nll_nats / num_tokens,
        "nll_nats": float(nll_nats),
        "num_tokens": int(num_tokens),
        "num_bytes": int(num_bytes),
    }


def token_nll_sum(logits: torch.Tensor, targets: torch.Tensor, token_chunk_size: int = 1024) -> torch.Tensor:
    """Sum over rows of -log softmax(logits)[target], in float64, computing float32 log-softmax per chunk.

    ``logits`` is (tokens, vocab) in any dtype; only ``token_chunk_size`` rows are upcast at a time.
    """
    total = torch.zeros((), dtype=torch.float64, device=logits.device)
    for start in range(0, logits.shape[0], token_chunk_size):
        log_probs = torch.log_softmax(logits[start : start + token_chunk_size].float(), dim=-1)
        picked = log_probs.gather(-1, targets[start : start + token_chunk_size, None]).squeeze(-1)
        total -= picked.double().sum()
    return total


@torch.no_grad()
def compute_perplexity(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 4,
    max_length: int | None = None,
    token_chunk_size: int = 1024,
    show_progress: bool = True,
) -> dict[str, float]:
    """Perplexity, bits per byte and the raw counts of ``model`` on ``texts`` (every token scored once).

    ``max_length`` is the window (context) length; teacher and student must be scored with the same one.
    """
    length = resolve_max_length(model, max_length)
    windows = text_windows(tokenizer, texts, length)
    if not windows:
        raise ValueError("no token to score: texts are empty")
    device = model_device(model)
    was_training = model.training
    model.eval()
    nll = torch.zeros((), dtype=torch.float64, device=device)
    num_tokens = 0
    total = math.ceil(len(windows) / batch_size)
    try:
        for batch in tqdm(
            batches(windows, batch_size, pad_id_of(tokenizer), device),
            total=total,
            desc="perplexity",
            disable=not show_progress,
        ):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            # Right padding: each row's targets are a prefix, so slice views instead of copying masked logits.
            for row, count in enumerate(batch.target_mask.sum(dim=1).tolist()):
                nll += token_nll_sum(logits[row, :count], batch.input_ids[row, 1 : count + 1], token_chunk_size)
                num_tokens += count
    finally:
        model.train(was_training)
    num_bytes = sum(len(text.encode("utf-8")) for text in texts)
    return perplexity_from_counts(float(nll), num_tokens, num_bytes)


_DESCRIPTION = """
Held-out perplexity and bits per byte of an in-memory causal LM (no model id, no download). Bits per byte
(total NLL / ln 2 / UTF-8 bytes) is comparable across tokenizers; perplexity is per token.
"""

_INPUTS = """
Args:
    predictions: list of texts to score.
    model: a causal LM (e.g. AutoModelForCausalLM). tokenizer: its tokenizer.
    batch_size, max_length (window length; default min(model context, 1024)), token_chunk_size, show_progress.
Returns:
    {"perplexity", "bits_per_byte", "nll_per_token", "nll_nats", "num_tokens", "num_bytes"}
"""


class HeldOutPerplexity(evaluate.Metric):
    """Perplexity and bits per byte of a model object on a list of texts."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(
        self,
        predictions: Sequence[str],
        model: Any = None,
        tokenizer: Any = None,
        batch_size: int = 4,
        max_length: int | None = None,
        token_chunk_size: int = 1024,
        show_progress: bool = True,
    ) -> dict[str, float]:
        if model is None or tokenizer is None:
            raise ValueError("HeldOutPerplexity.compute needs model=... and tokenizer=... (objects, not ids)")
        return compute_perplexity(
            model,
            tokenizer,
            predictions,
            batch_size=batch_size,
            max_length=max_length,
            token_chunk_size=token_chunk_size,
            show_progress=show_progress,
        )
