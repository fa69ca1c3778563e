"""The two-stage sequence-level job: the teacher writes completions, then the student is fine-tuned on them.

`run_recipe` calls in here when `generate_prompts_from` is set (`mode: seqkd`), so one `hf-distill recipe` or
`accelerate launch` runs both stages and ends in the recipe's usual report. ``output_dir/job_state.json``
(`JobState`) records each finished stage; a rerun of the same command after a kill

- resumes generation where it stopped (`generate_teacher_completions` skips its finished shards),
- skips a finished generation without loading the generating teacher,
- resumes fine-tuning (and the CE-only baseline) from its last complete checkpoint, and for a finished one
  reloads its final checkpoint without a training step (`resume_training.train_stage`),
- returns the report of a finished job without redoing anything.

Stage order: generate -> finetune -> ce_baseline (with ``ce_baseline``) -> report.
"""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path
from typing import Any

from .job_state import JobState
from .two_stage_arguments import HUMANEVAL, execution_check_arguments, generation_config

COMPLETIONS_DIR = "completions"
GENERATE, FINETUNE, CE_BASELINE, REPORT = "generate", "finetune", "ce_baseline", "report"
# Training settings that change nothing a finished stage produced: a resumed job may differ in these.
UNTRACKED_TRAINING_FIELDS = frozenset(
    {"output_dir", "local_rank", "disable_tqdm", "report_to", "run_name", "ddp_timeout", "logging_steps"}
)
UNTRACKED_PREFIXES = ("push_to_hub", "hub_")


def completions_dir(args: Any) -> Path:
    return Path(args.output_dir) / COMPLETIONS_DIR


def generating_teacher(recipe: Any, args: Any) -> str | None:
    return recipe.generation_teacher or args.teacher_model_name_or_path


def check_job(recipe: Any, args: Any) -> None:
    """Settings the two-stage job cannot run or resume with, refused before anything is loaded."""
    if not generating_teacher(recipe, args):
        raise ValueError(
            "generate_prompts_from needs a model to write the completions: set teacher_model_name_or_path (also "
            "the token-level teacher when it shares the student's tokenizer) or generation_teacher"
        )
    if str(getattr(args.save_strategy, "value", args.save_strategy)) != "steps":
        raise ValueError(
            "the two-stage job resumes fine-tuning from checkpoints and keeps the final one as the record of a "
            f"finished stage: set save_strategy: steps (with save_steps), not {args.save_strategy!r}"
        )
    if recipe.generation_backend == "vllm" and args.world_size > 1:
        raise ValueError("generation_backend=vllm runs in one process; generate first, then launch the job")


def job_settings(recipe: Any, args: Any, model_args: Any) -> dict[str, Any]:
    """Everything that decides what the job's stages produce (recorded at the start, compared on a rerun)."""
    training = {
        key: value
        for key, value in args.to_dict().items()
        if key not in UNTRACKED_TRAINING_FIELDS and not key.startswith(UNTRACKED_PREFIXES)
    }
    return {"recipe": dataclasses.asdict(recipe), "training": training, "student": dataclasses.asdict(model_args)}


def start_job(recipe: Any, args: Any, model_args: Any) -> JobState | None:
    """Open the job's state and run (or resume, or skip) the generation stage; None when not a two-stage job."""
    if not recipe.generate_prompts_from:
        return None
    check_job(recipe, args)
    job = JobState(args.output_dir, job_settings(recipe, args, model_args), writer=args.process_index == 0)
    if recipe.teacher_display_name is None:
        recipe.teacher_display_name = generating_teacher(recipe, args)
    run_generation_stage(recipe, args, job)
    return job


def finished_job_paths(job: JobState | None) -> dict[str, str] | None:
    """The report paths of a job that already finished (None while a stage is left)."""
    return dict(job.info(REPORT)["paths"]) if job is not None and job.finished(REPORT) else None


def finish_job(job: JobState | None, paths: dict[str, str]) -> None:
    if job is not None:
        job.finish(REPORT, paths=paths)


def load_prompt_rows(recipe: Any) -> Any:
    """The prompts to answer: HumanEval's problems, or any dataset `hf-distill generate` reads."""
    if recipe.generate_prompts_from == HUMANEVAL:
        from datasets import Dataset

        from ..evaluation.humaneval import load_humaneval_problems

        return Dataset.from_list(load_humaneval_problems(limit=recipe.generate_num_prompts))
    from ..teachers.generation.cli import load_prompts

    prompts = load_prompts(recipe.generate_prompts_from, recipe.generate_prompts_split)
    if recipe.generate_num_prompts is not None:
        prompts = prompts.select(range(min(recipe.generate_num_prompts, len(prompts))))
    return prompts


def run_generation_stage(recipe: Any, args: Any, job: JobState) -> None:
    """Write (or finish writing) the teacher's completions on the main process; the others wait for them."""
    from accelerate import PartialState

    if not job.finished(GENERATE) and args.process_index == 0:
        result = _generate(recipe, args)
        answered = len(set(result["prompt_index"])) if len(result) else 0
        if len(result) == 0:
            raise ValueError(
                f"no completion survived the generation filters (see {completions_dir(args)}/metadata.json); loosen "
                "them (generation_min/max_completion_tokens, generation_require_finished, the execution check) or "
                "raise generation_num_samples"
            )
        job.finish(GENERATE, rows=len(result), prompts_answered=answered, directory=COMPLETIONS_DIR)
    PartialState().wait_for_everyone()


def _generate(recipe: Any, args: Any) -> Any:
    from ..teachers.frozen import materialize_teacher
    from ..teachers.generation import generate_teacher_completions
    from .model_sources import resolve_model_source

    config = generation_config(recipe)
    check = execution_check_arguments(recipe).build(config.prompt_column)
    prompts = load_prompt_rows(recipe)
    source = resolve_model_source(generating_teacher(recipe, args))
    teacher, tokenizer = source, None
    if config.backend == "transformers":
        teacher, tokenizer = materialize_teacher(source, args)
        if not getattr(teacher, "is_quantized", False):
            teacher.to(args.device)
    try:
        return generate_teacher_completions(
            teacher,
            tokenizer,
            prompts,
            completions_dir(args),
            config,
            execution_check=check,
            progress=not args.disable_tqdm,
        )
    finally:
        del teacher
        _release_memory()


def _release_memory() -> None:
    """Free the generating teacher before the student and the training teacher are loaded."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def completions_training_data(recipe: Any, args: Any) -> tuple[Any, str]:
    """The finished completions as training rows, and a sentence for the model card.

    Rows keep the prompt dataset's columns (a ground-truth column for ``beta < 1``) and the generation's
    ``prompt``/``completion``; its ``messages`` column is dropped, so a plain SFT trainer (the CE baseline) reads
    the rows as prompt/completion pairs too. Prompts the teacher saw through its chat template become
    conversations, so the student trains on what the teacher answered.
    """
    from ..teachers.resumable import load_sharded, read_metadata

    directory = completions_dir(args)
    rows = load_sharded(directory).remove_columns("messages")
    if recipe.generation_chat_template_for_prompts:
        rows = rows.map(_as_conversation, desc="chat-template prompts")
    teacher = read_metadata(directory)["teacher"].get("name_or_path")
    description = (
        f"{len(rows)} completions written by the teacher (`{recipe.teacher_display_name or teacher}`) for "
        f"{len(set(rows['prompt_index']))} prompts from `{recipe.generate_prompts_from}` (settings in "
        f"`{directory}/metadata.json`), kept after the generation filters."
    )
    return rows, description


def _as_conversation(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "completion": [{"role": "assistant", "content": row["completion"]}],
    }
