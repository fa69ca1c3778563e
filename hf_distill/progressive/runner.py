"""Run a chain: each stage distils its student from the previous stage's saved result, resumably.

Each stage is an ordinary recipe run (`hf_distill.recipe.runner.build_trainer`: the student is a layer subset of
its source or a model as it is, the teacher is loaded from the previous stage's directory) whose output directory
is ``output_dir/<stage name>``. A killed chain rerun with the same file skips the stages `chain_state.json` lists
as finished and resumes the current one from its last ``checkpoint-*``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .spec import ChainSpec, StageSpec, stage_arguments
from .state import ChainState
from .stopping import StopRulesCallback, stop_reason

logger = logging.getLogger(__name__)


@dataclass
class ChainResult:
    """Where each stage's student is, why each stage ended, and the report files."""

    stage_dirs: dict[str, str]
    stop_reasons: dict[str, str]
    report: dict[str, str]


def held_out_rows(texts: Sequence[str], tokenizer: Any, max_length: int) -> Any:
    """Held-out texts as pre-tokenized windows, for the stop rules' in-training evaluation."""
    from ..recipe.stdlib_corpus import token_chunks, training_dataset

    rows = []
    for text in texts:
        rows.extend(token_chunks(tokenizer(text, add_special_tokens=False)["input_ids"], max_length, 2))
    if not rows:
        raise ValueError("stop rules need held-out text, but the held-out split is empty")
    return training_dataset(rows)


def stage_data(spec: ChainSpec, arguments: list[tuple[Any, Any, Any]], tokenizer: Any) -> list[Any]:
    """One row stream cut into consecutive slices, one per stage, so no stage repeats another's rows.

    The stream is as long as all stages' step caps consume (a direct run with the same total steps sees the
    same rows). A dataset too short for that gives every stage the whole dataset instead.
    """
    from ..recipe.runner import prepare_data, rows_needed

    counts = [rows_needed(args) for _, args, _ in arguments]
    recipe, args, _ = arguments[0]
    data = prepare_data(dataclasses.replace(recipe, num_train_rows=sum(counts)), args, tokenizer)
    needs_eval = any(stage.stop.needs_eval for stage in spec.stages)
    eval_dataset = held_out_rows(list(data.eval_texts.values()), tokenizer, args.max_length) if needs_eval else None
    train = data.train_dataset
    sliced = len(train) >= sum(counts)
    if not sliced:
        logger.warning(
            "the dataset has %d rows, fewer than the chain's %d: every stage sees all of it", len(train), sum(counts)
        )
    result, start = [], 0
    for count in counts:
        rows = train.select(range(start, start + count)) if sliced else train
        where = f" Rows {start}..{start + count - 1} of that stream." if sliced else ""
        result.append(
            dataclasses.replace(
                data, train_dataset=rows, description=data.description + where, eval_dataset=eval_dataset
            )
        )
        start += count
    return result


def _checkpoint_stop(checkpoint: str | None, stage: StageSpec) -> tuple[int, str] | None:
    """(step, reason) if the stage had already stopped early at ``checkpoint`` (killed before it was recorded)."""
    if checkpoint is None:
        return None
    trainer_state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    history = trainer_state.get("log_history", [])
    evals = [entry for entry in history if "eval_loss" in entry]
    reason = stop_reason(stage.stop, history)
    if reason is None or evals[-1].get("step") != trainer_state["global_step"]:
        return None
    return trainer_state["global_step"], reason


def _drop_checkpoints(stage_dir: str) -> None:
    for path in Path(stage_dir).glob("checkpoint-*"):
        shutil.rmtree(path, ignore_errors=True)


def run_stage(
    spec: ChainSpec, stage: StageSpec, teacher: str, arguments: tuple, data: Any, callbacks: Sequence
) -> dict:
    """Train one stage to its stop (resuming from its last checkpoint) and save its student; the state record."""
    from transformers.trainer_utils import get_last_checkpoint

    from ..model_card import ModelCardInfo
    from ..recipe.runner import build_trainer, display_name

    recipe, args, model_args = arguments
    run = build_trainer(recipe, args, model_args, data=data)
    trainer = run.trainer
    stopper = StopRulesCallback(stage.stop)
    for callback in (stopper, *callbacks):
        trainer.add_callback(callback)
    stage_dir = spec.stage_dir(stage)
    last = get_last_checkpoint(stage_dir) if os.path.isdir(stage_dir) else None
    already = _checkpoint_stop(last, stage)
    if already is not None:  # it stopped there and was killed before being recorded: that checkpoint is the result
        from transformers import TrainerState

        print(f"[progressive] stage {stage.name}: had stopped early at {last}", flush=True)
        trainer._load_from_checkpoint(last)  # what resume_from_checkpoint itself does with the weights
        trainer.state = TrainerState.load_from_json(os.path.join(last, "trainer_state.json"))
    else:
        if last:
            print(f"[progressive] stage {stage.name}: resuming from {last}", flush=True)
        trainer.train(resume_from_checkpoint=last)
    reason = stopper.reason or (already[1] if already else f"fixed steps ({args.max_steps})")
    trainer.model_card_info = ModelCardInfo(
        model_name=stage.name,
        base_model=display_name(run.student_name),
        teacher=display_name(teacher),
        student_init=run.student_init,
        data=run.data.description,
        evaluation="Stage of a progressive chain; see the chain's report.md for held-out scores.",
    )
    trainer.save_model()
    return {
        "path": stage_dir,
        "teacher": teacher,
        "student": stage.student.describe(),
        "steps": trainer.state.global_step,
        "stop_reason": reason,
    }


def run_chain(spec: ChainSpec, callbacks: Sequence = (), report: bool = True) -> ChainResult:
    """Run (or resume) every stage in order, then write the chain report unless ``report`` is False."""
    import torch

    from ..recipe.model_sources import load_tokenizer, resolve_model_source

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError(
            "a progressive chain runs in one process (every rank would write chain_state.json and the stage "
            "directories); launch it without accelerate/torchrun, or run each stage with the recipe instead"
        )
    state = ChainState(spec.output_dir, spec.fingerprint())
    placeholders = [stage_arguments(spec, s, teacher=spec.teacher, student_source=spec.teacher) for s in spec.stages]
    tokenizer = load_tokenizer(resolve_model_source(spec.teacher), "teacher")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    datas = stage_data(spec, placeholders, tokenizer)
    previous = spec.teacher
    dirs: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for index, stage in enumerate(spec.stages):
        record = state.finished(stage.name)
        if record is None:
            print(
                f"[progressive] stage {index + 1}/{len(spec.stages)} {stage.name}: {stage.student.describe()}, "
                f"teacher {previous}",
                flush=True,
            )
            arguments = stage_arguments(spec, stage, teacher=previous, student_source=previous)
            record = run_stage(spec, stage, previous, arguments, datas[index], callbacks)
            state.mark_finished(stage.name, **record)
            if not spec.keep_stage_checkpoints:
                _drop_checkpoints(record["path"])
            gc.collect()  # the stage's trainer, teacher and student go before the next stage loads its own
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        else:
            print(
                f"[progressive] stage {index + 1}/{len(spec.stages)} {stage.name}: finished, at {record['path']}",
                flush=True,
            )
        dirs[stage.name] = record["path"]
        reasons[stage.name] = record["stop_reason"]
        previous = record["path"]
    paths: dict[str, str] = {}
    if report:
        from .report import write_chain_report

        paths = write_chain_report(spec, dirs, reasons, placeholders[0], datas[0].eval_texts, tokenizer)
    return ChainResult(dirs, reasons, paths)
