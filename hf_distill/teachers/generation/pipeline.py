"""Teacher generation for sequence-level KD: prompts in, a dataset of (filtered) teacher completions out.

The run is sharded and resumable (``resumable.run_sharded``): kill it and rerun the same command, and it
continues after the last finished shard without losing or duplicating rows. The output keeps the input
columns and adds the completion in both the ``prompt``/``completion`` and the ``messages`` forms, so
students with other tokenizers or chat templates can train on it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from datasets import Dataset
from datasets.fingerprint import Hasher

from ..._version import __version__
from ..resumable import run_sharded
from .config import TeacherGenerationConfig
from .hf import generate_candidates, mean_log_likelihoods
from .prompts import (
    PromptFormat,
    check_prompt_lengths,
    detect_prompt_format,
    render_prompts,
    teacher_context_length,
)
from .selection import Candidate, ExecutionCheck, select_candidates
from .vllm import generate_candidates_vllm, load_vllm_teacher

logger = logging.getLogger(__name__)

# Columns this pipeline writes; an input column of the same name would be silently overwritten.
ADDED_COLUMNS = ("completion", "prompt_index", "sample_index", "num_candidates", "teacher_score", "finished", "passed")
# Every output row has these, in this order, after the input columns.
OUTPUT_COLUMNS = (
    "prompt",
    "completion",
    "messages",
    "sample_index",
    "num_candidates",
    "teacher_score",
    "finished",
    "passed",
)
_VALIDATION_BATCH = 1024


def generate_teacher_completions(
    teacher: Any,
    tokenizer: Any,
    prompts: Dataset | Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    config: TeacherGenerationConfig | None = None,
    execution_check: ExecutionCheck | None = None,
    progress: bool = True,
) -> Dataset:
    """Write teacher completions for ``prompts`` to ``out_dir`` (resumably) and return them as a dataset.

    ``teacher`` is a causal LM (transformers backend) or a model name/path (loaded with
    ``from_pretrained``, or by vLLM when ``config.backend == 'vllm'``). ``tokenizer`` may be None when
    ``teacher`` is a name. ``execution_check(row, completion)`` (e.g. ``UnitTestExecutionCheck``) keeps
    only completions that pass; it is never run unless given. Each output row carries ``prompt_index``
    (the input row it answers), ``sample_index``, ``num_candidates`` (generated for that prompt),
    ``teacher_score`` (mean log-likelihood, when ``selection='loglik'``), ``finished`` and ``passed``.
    """
    config = config or TeacherGenerationConfig()
    dataset = prompts if isinstance(prompts, Dataset) else Dataset.from_list(list(prompts))
    if len(dataset) == 0:
        raise ValueError("the prompt dataset is empty")
    model, tokenizer = _load_teacher(teacher, tokenizer, config)
    fmt = detect_prompt_format(dataset.column_names, dataset[0], config)
    _check_column_conflicts(dataset.column_names, fmt)
    context = None if config.backend == "vllm" else teacher_context_length(model, tokenizer)
    _validate_all_prompts(dataset, fmt, tokenizer, config, context)

    metadata = {
        "generation": config.to_dict(),
        "teacher": teacher_identity(model, tokenizer, teacher),
        "prompt_format": {"column": fmt.column, "conversational": fmt.conversational},
        "execution_check": _describe_check(execution_check),
        "hf_distill_version": __version__,
    }
    indexed = dataset.add_column("prompt_index", list(range(len(dataset))))

    def process(batch: dict[str, list]) -> dict[str, list]:
        return _process_shard(batch, model, tokenizer, fmt, config, execution_check)

    result = run_sharded(
        indexed, config.shard_size, out_dir, process, metadata=metadata, progress=progress, desc="teacher generation"
    )
    answered = len(set(result["prompt_index"])) if len(result) else 0
    logger.info("teacher generation: %d rows kept for %d of %d prompts", len(result), answered, len(dataset))
    return result


def teacher_identity(model: Any, tokenizer: Any, teacher_arg: Any) -> dict[str, Any]:
    """Enough to tell teachers apart in metadata: name, class, size, dtype and a weights fingerprint."""
    tokenizer_info = {
        "name_or_path": getattr(tokenizer, "name_or_path", None),
        "vocab_size": len(tokenizer),
        "chat_template_sha256": _sha256(tokenizer.chat_template) if getattr(tokenizer, "chat_template", None) else None,
    }
    if isinstance(teacher_arg, str) and not hasattr(model, "parameters"):  # vLLM engine
        return {"name_or_path": teacher_arg, "backend": "vllm", "tokenizer": tokenizer_info}
    config = model.config
    head = model.get_output_embeddings()
    head_weight = head.weight if head is not None else next(model.parameters())
    fingerprint = hashlib.sha256(head_weight.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]
    return {
        "name_or_path": getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None),
        "commit_hash": getattr(config, "_commit_hash", None),
        "class": type(model).__name__,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(next(model.parameters()).dtype),
        "output_embedding_sha256": fingerprint,
        "tokenizer": tokenizer_info,
    }


def _load_teacher(teacher: Any, tokenizer: Any, config: TeacherGenerationConfig) -> tuple[Any, Any]:
    if config.backend == "vllm":
        if not isinstance(teacher, str):
            raise ValueError("backend='vllm' needs the teacher as a model name or path, not a loaded model")
        model = load_vllm_teacher(teacher, seed=config.seed)
        return model, tokenizer if tokenizer is not None else model.get_tokenizer()
    if isinstance(teacher, str | os.PathLike):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(teacher)
        teacher = AutoModelForCausalLM.from_pretrained(teacher)
    if tokenizer is None:
        raise ValueError("pass the teacher's tokenizer (or give the teacher as a name/path to load both)")
    return teacher, tokenizer


def _check_column_conflicts(columns: Sequence[str], fmt: PromptFormat) -> None:
    produced = set(ADDED_COLUMNS) | {"prompt", "messages"}
    produced.discard(fmt.column)  # the prompt column is carried over as-is (messages are extended)
    clashes = sorted(produced & set(columns))
    if clashes:
        raise ValueError(
            f"the prompt dataset already has column(s) {clashes}, which teacher generation writes; rename them "
            "(e.g. keep a ground-truth answer as 'reference')"
        )


def _validate_all_prompts(
    dataset: Dataset, fmt: PromptFormat, tokenizer: Any, config: TeacherGenerationConfig, context: int | None
) -> None:
    for start in range(0, len(dataset), _VALIDATION_BATCH):
        values = dataset[start : start + _VALIDATION_BATCH][fmt.column]
        ids = render_prompts(values, fmt, tokenizer, config, first_index=start)
        check_prompt_lengths(ids, context, config.max_new_tokens, first_index=start)


def _describe_check(check: ExecutionCheck | None) -> dict[str, Any] | None:
    if check is None:
        return None
    describe = getattr(check, "describe", None)
    return describe() if callable(describe) else {"type": getattr(check, "__qualname__", type(check).__name__)}


def _process_shard(
    batch: dict[str, list],
    model: Any,
    tokenizer: Any,
    fmt: PromptFormat,
    config: TeacherGenerationConfig,
    execution_check: ExecutionCheck | None,
) -> dict[str, list]:
    """Generate, filter and select for one shard; returns the output rows as columns."""
    prompt_ids = render_prompts(batch[fmt.column], fmt, tokenizer, config, first_index=batch["prompt_index"][0])
    # Seeded by the shard's content, so a resumed run samples exactly what an uninterrupted one would.
    seed = (config.seed * 1_000_003 + int(Hasher.hash(batch)[:8], 16)) % 2**31
    if config.backend == "vllm":
        all_candidates = generate_candidates_vllm(model, tokenizer, prompt_ids, config, seed)
    else:
        all_candidates = generate_candidates(model, tokenizer, prompt_ids, config, seed)
    columns: dict[str, list] = {name: [] for name in (*batch.keys(), *OUTPUT_COLUMNS)}
    for i, candidates in enumerate(all_candidates):
        row = {name: values[i] for name, values in batch.items()}

        def score(cands: list[Candidate], ids: list[int] = prompt_ids[i]) -> list[float]:
            if config.backend == "vllm":
                return [c.score if c.score is not None else float("-inf") for c in cands]
            return mean_log_likelihoods(model, tokenizer, ids, cands)

        for chosen in select_candidates(candidates, config, row, score_fn=score, execution_check=execution_check):
            out = {
                **row,
                **_completion_forms(row[fmt.column], chosen.text, fmt),
                "sample_index": chosen.sample_index,
                "num_candidates": len(candidates),
                "teacher_score": chosen.score,
                "finished": chosen.finished,
                "passed": chosen.passed,
            }
            for name, value in out.items():
                columns[name].append(value)
    return columns


def _completion_forms(prompt_value: Any, completion: str, fmt: PromptFormat) -> dict[str, Any]:
    """The same completion as prompt/completion (text or conversational) and as a full conversation."""
    answer = {"role": "assistant", "content": completion}
    if fmt.conversational:
        conversation = [dict(m) for m in prompt_value]
        return {"prompt": conversation, "completion": [answer], "messages": [*conversation, answer]}
    return {
        "prompt": prompt_value,
        "completion": completion,
        "messages": [{"role": "user", "content": prompt_value}, answer],
    }


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
