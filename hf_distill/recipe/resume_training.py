"""Training that happens once across reruns of a killed job: resume from the last complete checkpoint, and never
train a finished run again.

Two things the Trainer alone gets wrong for a job that is simply rerun: the newest ``checkpoint-N`` may be a save
cut short by the kill, and resuming from the checkpoint saved at ``max_steps`` inside an epoch trains one step
too many. `train_stage` handles both, and records a finished stage in the job's `JobState` when there is one.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .job_state import JobState

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-N`` holding a trainer state (the Trainer writes it last, so a save cut short by a
    kill is passed over)."""
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        (int(match.group(1)), entry.name)
        for entry in os.scandir(output_dir)
        if (match := _CHECKPOINT.match(entry.name)) and os.path.isfile(os.path.join(entry.path, TRAINER_STATE))
    )
    return os.path.join(output_dir, steps[-1][1]) if steps else None


class _StageAlreadyTrained(Exception):
    """Raised before the first step of a finished stage: its final checkpoint is loaded, nothing is left to run."""


class _StopBeforeAnyStep(TrainerCallback):
    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        raise _StageAlreadyTrained


def reload_final_checkpoint(trainer: Any, checkpoint: str) -> None:
    """Restore a finished training run from its final checkpoint without a training step.

    Why not ``trainer.train(resume_from_checkpoint=final)``: the Trainer checks for the last step only after
    running one, so resuming a run that ended inside an epoch trains one step too many. The Trainer's own resume
    still does the loading here (weights on every backend, optimizer, scheduler, state and log history); the
    callback stops it at the first step.
    """
    stopper = _StopBeforeAnyStep()
    trainer.add_callback(stopper)
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    except _StageAlreadyTrained:
        pass
    finally:
        trainer.remove_callback(stopper)


def reached_max_steps(checkpoint: str, args: Any) -> bool:
    """Whether ``checkpoint`` was saved at (or past) the run's last step."""
    state = json.loads(Path(checkpoint, TRAINER_STATE).read_text(encoding="utf-8"))
    return args.max_steps > 0 and state["global_step"] >= args.max_steps


def train_stage(trainer: Any, job: JobState | None, stage: str) -> None:
    """Train ``trainer`` once across reruns: resume from its last complete checkpoint, or, when that checkpoint
    is the final one (a finished stage), reload it without a training step."""
    output_dir = trainer.args.output_dir
    if job is not None and job.finished(stage):
        checkpoint = os.path.join(output_dir, job.info(stage)["checkpoint"])
        if not os.path.isfile(os.path.join(checkpoint, TRAINER_STATE)):
            raise FileNotFoundError(
                f"{job.path} records stage {stage!r} as finished with its final checkpoint {checkpoint}, which is "
                "gone; restore it, or use a fresh output_dir to train again"
            )
    else:
        checkpoint = last_complete_checkpoint(output_dir)
    if checkpoint is not None and reached_max_steps(checkpoint, trainer.args):
        reload_final_checkpoint(trainer, checkpoint)
    else:
        trainer.train(resume_from_checkpoint=checkpoint)
    if job is None or not job.writer or job.finished(stage):
        return
    final = last_complete_checkpoint(output_dir)
    step = trainer.state.global_step
    if final is None or not final.endswith(f"checkpoint-{step}"):
        raise RuntimeError(f"training stopped at step {step} without its final checkpoint in {output_dir}")
    job.finish(stage, checkpoint=os.path.basename(final), global_step=step)  # relative: the job may move
