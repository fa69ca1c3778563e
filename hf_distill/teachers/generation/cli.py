"""Write teacher completions for a prompt dataset (sequence-level KD, step 1); rerun the same command to resume.

The `hf-distill generate` command (also `python scripts/generate_teacher_completions.py`). Examples:
    hf-distill generate --teacher HuggingFaceTB/SmolLM2-135M-Instruct \\
        --dataset prompts.jsonl --out runs/teacher_completions --strategy sample --num-samples 4 \\
        --selection loglik --max-new-tokens 256

    # code prompts with unit tests (HumanEval layout: prompt, test, entry_point), keep passing completions
    hf-distill generate --teacher ... --dataset humaneval.jsonl --out runs/he \\
        --strategy sample --num-samples 8 --stop "\\ndef " --execution-check --allow-code-execution

The output directory holds Parquet shards and metadata.json; load it with
``hf_distill.load_sharded(out_dir)`` or ``datasets.Dataset.from_parquet(...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ...cli_parsing import parse_dataclasses
from ..run_arguments import TeacherRunArguments
from .config import TeacherGenerationConfig
from .pipeline import generate_teacher_completions

if TYPE_CHECKING:
    from .execution import UnitTestExecutionCheck

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


@dataclass
class GenerationRunArguments(TeacherRunArguments):
    """Which teacher and prompts to run and where the completions go; ``TeacherGenerationConfig`` says how."""

    limit: int | None = field(default=None, metadata={"help": "only the first N prompts"})


@dataclass
class ExecutionCheckArguments:
    """The optional unit-test filter (``UnitTestExecutionCheck``); off unless ``--execution-check`` is given."""

    execution_check: bool = field(
        default=False, metadata={"help": "keep only completions passing the row's unit tests (HumanEval layout)"}
    )
    allow_code_execution: bool = field(
        default=False, metadata={"help": "opt in to running model-generated code (sandboxed, best effort)"}
    )
    test_column: str = field(default="test", metadata={"help": "column with the unit tests"})
    entry_point_column: str = field(
        default="entry_point", metadata={"help": "column naming the function under test ('' for none)"}
    )
    exec_timeout: float = field(default=5.0, metadata={"help": "seconds per test run"})
    exec_memory_mb: int = field(default=512, metadata={"help": "memory limit per test run, in MiB"})

    def build(self, prompt_column: str) -> UnitTestExecutionCheck | None:
        """The check these arguments describe, or None when ``--execution-check`` is off."""
        if not self.execution_check:
            return None
        from .execution import UnitTestExecutionCheck

        return UnitTestExecutionCheck(
            test_column=self.test_column,
            entry_point_column=self.entry_point_column or None,
            prompt_column=prompt_column,
            timeout=self.exec_timeout,
            memory_mb=self.exec_memory_mb,
            allow_code_execution=self.allow_code_execution,
        )


def decode_escapes(text: str) -> str:
    """``\\n``, ``\\t``, ``\\u00e9`` ... typed on a command line become the characters they name."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[GenerationRunArguments, TeacherGenerationConfig, ExecutionCheckArguments]:
    """Run arguments, generation config (stop sequences decoded) and execution check, from flags and/or YAML."""
    run, config, check = parse_dataclasses(
        (GenerationRunArguments, TeacherGenerationConfig, ExecutionCheckArguments), argv, "hf-distill generate", __doc__
    )
    config = replace(config, stop_sequences=[decode_escapes(s) for s in config.stop_sequences])
    return run, config, check


def main(argv: Sequence[str] | None = None) -> int:
    run, config, check_args = parse_args(argv)
    check = check_args.build(config.prompt_column)
    prompts = load_prompts(run.dataset, run.split)
    if run.limit is not None:
        prompts = prompts.select(range(min(run.limit, len(prompts))))

    teacher, tokenizer = run.teacher, None
    if config.backend == "transformers":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(run.teacher)
        teacher = AutoModelForCausalLM.from_pretrained(run.teacher, dtype=run.dtype)
    result = generate_teacher_completions(
        teacher, tokenizer, prompts, run.out, config, execution_check=check, progress=run.progress
    )
    answered = len(set(result["prompt_index"])) if len(result) else 0
    print(f"{len(result)} completions for {answered}/{len(prompts)} prompts in {run.out}")
    return 0
