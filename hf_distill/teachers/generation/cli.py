"""Write teacher completions for a prompt dataset (sequence-level KD, step 1); rerun the same command to resume.

The `hf-distill generate` command (also `python scripts/generate_teacher_completions.py`). Examples:
    hf-distill generate --teacher HuggingFaceTB/SmolLM2-135M-Instruct \\
        --dataset prompts.jsonl --out runs/teacher_completions --strategy sample --num-samples 4 \\
        --selection loglik --max-new-tokens 256

    # code prompts with unit tests (HumanEval layout: prompt, test, entry_point), keep passing completions
    hf-distill generate --teacher ... --dataset humaneval.jsonl --out runs/he \\
        --strategy sample --num-samples 8 --stop "\\ndef " --execution-check --allow-code-execution

The output directory holds Parquet shards and metadata.json; load it with
``hf_distill.teachers.resumable.load_sharded(out_dir)`` or ``datasets.Dataset.from_parquet(...)``.
"""

from __future__ import annotations

import argparse
import codecs
from pathlib import Path

from .config import BACKENDS, SELECTIONS, STRATEGIES, TeacherGenerationConfig
from .pipeline import generate_teacher_completions

_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def load_prompts(source: str, split: str):
    """A local file (json/jsonl/parquet/csv), a ``save_to_disk`` directory, or a Hub dataset name."""
    from datasets import load_dataset, load_from_disk

    path = Path(source)
    if path.is_dir() and (path / "dataset_info.json").exists():
        return load_from_disk(str(path))
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix)
        if builder is None:
            raise SystemExit(f"unsupported prompt file type {path.suffix!r}; use one of {sorted(_FILE_BUILDERS)}")
        return load_dataset(builder, data_files=str(path), split="train")
    return load_dataset(source, split=split)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hf-distill generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", required=True, help="teacher model name or local path")
    parser.add_argument("--dataset", required=True, help="prompt file, save_to_disk directory or Hub dataset")
    parser.add_argument("--split", default="train")
    parser.add_argument("--out", required=True, help="output directory (resumable)")
    parser.add_argument("--limit", type=int, help="only the first N prompts")
    parser.add_argument("--prompt-column", default="prompt")
    parser.add_argument("--messages-column", default="messages")
    parser.add_argument(
        "--chat-template-for-prompts",
        action="store_true",
        help="wrap plain prompts as a user message in the teacher's chat template",
    )
    parser.add_argument("--strategy", choices=STRATEGIES, default="greedy")
    parser.add_argument("--num-samples", type=int, default=1, help="candidates per prompt")
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument(
        "--stop", action="append", default=[], help="stop sequence (repeatable; backslash escapes like \\n are decoded)"
    )
    parser.add_argument("--selection", choices=SELECTIONS, default="first")
    parser.add_argument("--min-completion-tokens", type=int, default=0)
    parser.add_argument("--max-completion-tokens", type=int)
    parser.add_argument("--require-finished", action="store_true", help="drop completions cut by max-new-tokens")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=BACKENDS, default="transformers")
    parser.add_argument("--dtype", default="auto", help="teacher dtype for the transformers backend")
    parser.add_argument(
        "--execution-check",
        action="store_true",
        help="keep only completions passing the row's unit tests (HumanEval layout)",
    )
    parser.add_argument(
        "--allow-code-execution",
        action="store_true",
        help="opt in to running model-generated code (sandboxed, best effort)",
    )
    parser.add_argument("--test-column", default="test")
    parser.add_argument("--entry-point-column", default="entry_point")
    parser.add_argument("--exec-timeout", type=float, default=5.0)
    parser.add_argument("--exec-memory-mb", type=int, default=512)
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = TeacherGenerationConfig(
        strategy=args.strategy,
        max_new_tokens=args.max_new_tokens,
        num_samples=args.num_samples,
        num_beams=args.num_beams,
        length_penalty=args.length_penalty,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        stop_sequences=[codecs.decode(s, "unicode_escape") for s in args.stop],
        selection=args.selection,
        min_completion_tokens=args.min_completion_tokens,
        max_completion_tokens=args.max_completion_tokens,
        require_finished=args.require_finished,
        chat_template_for_prompts=args.chat_template_for_prompts,
        prompt_column=args.prompt_column,
        messages_column=args.messages_column,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        seed=args.seed,
        backend=args.backend,
    )
    check = None
    if args.execution_check:
        from .execution import UnitTestExecutionCheck

        check = UnitTestExecutionCheck(
            test_column=args.test_column,
            entry_point_column=args.entry_point_column or None,
            prompt_column=args.prompt_column,
            timeout=args.exec_timeout,
            memory_mb=args.exec_memory_mb,
            allow_code_execution=args.allow_code_execution,
        )
    prompts = load_prompts(args.dataset, args.split)
    if args.limit is not None:
        prompts = prompts.select(range(min(args.limit, len(prompts))))

    teacher, tokenizer = args.teacher, None
    if args.backend == "transformers":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.teacher)
        teacher = AutoModelForCausalLM.from_pretrained(args.teacher, dtype=args.dtype)
    result = generate_teacher_completions(
        teacher, tokenizer, prompts, args.out, config, execution_check=check, progress=not args.no_progress
    )
    answered = len(set(result["prompt_index"])) if len(result) else 0
    print(f"{len(result)} completions for {answered}/{len(prompts)} prompts in {args.out}")
    return 0
