"""The transformers backend: batched ``generate`` with left padding, the KV cache and stop sequences, and
scoring a completion by the teacher's mean log-likelihood.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from .config import TeacherGenerationConfig
from .selection import Candidate

# Scoring forms float32 log-probabilities for this many completion tokens at a time (x vocab).
_SCORE_CHUNK_TOKENS = 128


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token id that ends a completion: the model's generation config and the tokenizer's EOS."""
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:
        ids.update([configured] if isinstance(configured, int) else configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("neither the teacher's generation config nor its tokenizer defines an EOS token")
    return sorted(ids)


def hf_generation_config(config: TeacherGenerationConfig, eos_ids: list[int], pad_id: int) -> GenerationConfig:
    """Every decoding knob set explicitly, so the teacher's own generation_config.json cannot change it."""
    sample = config.strategy == "sample"
    sampling = (
        {"temperature": config.temperature, "top_p": config.top_p, "top_k": config.top_k}
        if sample
        else {"temperature": 1.0, "top_p": 1.0, "top_k": 50}
    )  # transformers' neutral defaults: no "ignored flag" warning
    return GenerationConfig(
        max_new_tokens=config.max_new_tokens,
        min_new_tokens=0,
        do_sample=sample,
        num_beams=config.num_beams if config.strategy == "beam" else 1,
        num_return_sequences=config.num_samples,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        length_penalty=config.length_penalty,
        **sampling,
        early_stopping=False,
        stop_strings=config.stop_sequences or None,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
        use_cache=True,
    )


def _pad_left(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def truncate_at_stop(text: str, stop_sequences: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop sequence; the flag says whether one was found."""
    cut = min((pos for pos in (text.find(s) for s in stop_sequences) if pos >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def to_candidate(
    new_ids: Sequence[int], eos_ids: Sequence[int], tokenizer: Any, config: TeacherGenerationConfig, sample_index: int
) -> Candidate:
    """Generated ids (after the prompt) -> completion text, cut at the first EOS and stop sequence.

    ``token_ids`` re-tokenise the final text: that text is what students train on, so length limits and
    likelihood scores are about it (special tokens dropped by decoding, or a cut stop sequence, included).
    """
    ids = list(new_ids)
    eos_positions = [i for i, token in enumerate(ids) if token in eos_ids]
    ended_with_eos = bool(eos_positions)
    generated = ids[: eos_positions[0] + 1] if ended_with_eos else ids
    if ended_with_eos:
        ids = ids[: eos_positions[0]]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    text, stopped = truncate_at_stop(text, config.stop_sequences)
    ended_with_eos = ended_with_eos and not stopped
    token_ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
    return Candidate(
        text=text,
        token_ids=list(token_ids),
        finished=ended_with_eos or stopped,
        ended_with_eos=ended_with_eos,
        sample_index=sample_index,
        generated_ids=generated,
    )


@torch.no_grad()
def generate_candidates(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    config: TeacherGenerationConfig,
    seed: int,
    progress: bool = False,
) -> list[list[Candidate]]:
    """``config.num_samples`` candidates per prompt, in prompt order.

    Prompts are batched by length (less padding), left-padded so every row's new tokens start at the same
    position, and decoded with the KV cache. Sampling is seeded with ``seed`` on a private copy of the RNG
    state, so results are reproducible and the caller's RNG is left untouched.
    """
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    gen_config = hf_generation_config(config, eos_ids, pad_id)
    device = next(model.parameters()).device
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    results: list[list[Candidate]] = [[] for _ in prompt_ids]
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            batches = range(0, len(order), config.batch_size)
            for start in tqdm(batches, desc="generate", disable=not progress, leave=False):
                batch = order[start : start + config.batch_size]
                input_ids, attention_mask = _pad_left([prompt_ids[i] for i in batch], pad_id, device)
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    generation_config=gen_config,
                    tokenizer=tokenizer if config.stop_sequences else None,
                )
                new_tokens = output[:, input_ids.shape[1] :].tolist()
                for row, prompt_index in enumerate(batch):
                    for sample in range(config.num_samples):
                        ids = new_tokens[row * config.num_samples + sample]
                        results[prompt_index].append(to_candidate(ids, eos_ids, tokenizer, config, sample))
    finally:
        model.train(was_training)
    return results


@torch.no_grad()
def mean_log_likelihoods(
    model: Any, tokenizer: Any, prompt_ids: Sequence[int], candidates: Sequence[Candidate]
) -> list[float]:
    """Teacher mean log-probability per completion token (EOS included when the candidate ended with it).

    An empty completion (nothing to score) gets -inf so it never wins a likelihood ranking.
    """
    eos_id = eos_token_ids(model, tokenizer)[0]
    device = next(model.parameters()).device
    scores: list[float] = []
    for candidate in candidates:
        targets = list(candidate.token_ids) + ([eos_id] if candidate.ended_with_eos else [])
        if not targets:
            scores.append(-math.inf)
            continue
        ids = torch.tensor([list(prompt_ids) + targets], device=device)
        # Logits at positions len(prompt)-1 ... end-1 predict the completion tokens.
        logits = model(input_ids=ids, logits_to_keep=len(targets) + 1).logits[0, :-1]
        target_ids = torch.tensor(targets, device=device)
        total = 0.0
        for chunk in range(0, len(targets), _SCORE_CHUNK_TOKENS):
            part = logits[chunk : chunk + _SCORE_CHUNK_TOKENS].float().log_softmax(-1)
            total += part.gather(-1, target_ids[chunk : chunk + _SCORE_CHUNK_TOKENS, None]).sum().item()
        scores.append(total / len(targets))
    return scores
