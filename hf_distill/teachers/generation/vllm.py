"""Optional vLLM backend for teacher generation (much faster on GPUs; used only when installed and asked for).

Only greedy and sampling are supported here; beam search stays on the transformers backend. With
``selection='loglik'`` the score is vLLM's cumulative log-probability of the sampled tokens divided by
their count (vLLM reports raw-model log-probabilities by default).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from .config import TeacherGenerationConfig
from .selection import Candidate


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def load_vllm_teacher(name_or_path: str, seed: int, **llm_kwargs: Any) -> Any:
    """A ``vllm.LLM`` for the teacher; raises a clear error when vLLM is not installed."""
    if not vllm_installed():
        raise ImportError(
            "backend='vllm' needs the vllm package (pip install vllm, GPU required); "
            "use backend='transformers' otherwise"
        )
    from vllm import LLM

    return LLM(model=name_or_path, seed=seed, **llm_kwargs)


def generate_candidates_vllm(
    llm: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], config: TeacherGenerationConfig, seed: int
) -> list[list[Candidate]]:
    """``config.num_samples`` candidates per prompt from a ``vllm.LLM``, in prompt order."""
    if config.strategy == "beam":
        raise ValueError(
            "the vLLM backend supports strategy 'greedy' and 'sample'; use backend='transformers' for beam search"
        )
    from vllm import SamplingParams

    greedy = config.strategy == "greedy"
    params = SamplingParams(
        n=config.num_samples,
        temperature=0.0 if greedy else config.temperature,
        top_p=1.0 if greedy else config.top_p,
        top_k=-1 if greedy or config.top_k == 0 else config.top_k,
        max_tokens=config.max_new_tokens,
        stop=config.stop_sequences or None,
        seed=seed,
        logprobs=0 if config.selection == "loglik" else None,
    )
    outputs = llm.generate([{"prompt_token_ids": list(ids)} for ids in prompt_ids], params, use_tqdm=False)
    results: list[list[Candidate]] = []
    for output in outputs:
        candidates = []
        for sample_index, completion in enumerate(output.outputs):
            finished = completion.finish_reason == "stop"
            ended_with_eos = finished and completion.stop_reason is None
            ids = list(completion.token_ids)
            if finished and not ended_with_eos:  # stop string: vLLM drops it from the text, not from the ids
                ids = tokenizer(completion.text, add_special_tokens=False)["input_ids"] if completion.text else []
            elif ended_with_eos and ids:
                ids = ids[:-1]
            score = None
            if completion.cumulative_logprob is not None and completion.token_ids:
                score = completion.cumulative_logprob / len(completion.token_ids)
            candidates.append(
                Candidate(
                    text=completion.text,
                    token_ids=ids,
                    finished=finished,
                    ended_with_eos=ended_with_eos,
                    sample_index=sample_index,
                    score=score,
                )
            )
        results.append(candidates)
    return results
