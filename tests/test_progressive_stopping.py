"""Stop rules of a progressive stage, judged on hand-built Trainer log histories."""

from __future__ import annotations

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from hf_distill.progressive.stopping import StopRules, StopRulesCallback, stop_reason


def history(*evals, train_every=True):
    """A log history: a training entry before each evaluation (ignored by the rules), evals as (loss, kl)."""
    entries = []
    for step, (loss, kl) in enumerate(evals, start=1):
        if train_every:
            entries.append({"loss": 99.0, "teacher_kl": 0.0, "step": step})
        entries.append({"eval_loss": loss, "eval_teacher_kl": kl, "step": step})
    return entries


def test_no_rule_and_no_evaluation_never_stop():
    assert stop_reason(StopRules(), history((3.0, 1.0), (3.0, 1.0), (3.0, 1.0))) is None
    assert stop_reason(StopRules(eval_steps=1, plateau_patience=1, kl_below=0.5), [{"loss": 1.0, "step": 1}]) is None


def test_plateau_counts_evaluations_since_the_best_loss():
    losses = history((3.0, 1), (2.5, 1), (2.6, 1), (2.55, 1))  # best 2.5 at step 2, then two worse ones
    assert "plateau" in stop_reason(StopRules(eval_steps=1, plateau_patience=2), losses)
    assert stop_reason(StopRules(eval_steps=1, plateau_patience=3), losses) is None
    improving = history((3.0, 1), (2.9, 1), (2.8, 1))
    assert stop_reason(StopRules(eval_steps=1, plateau_patience=1), improving) is None


def test_plateau_min_delta_ignores_small_improvements():
    losses = history((3.0, 1), (2.95, 1), (2.92, 1))  # each gain < 0.1 below the best
    assert stop_reason(StopRules(eval_steps=1, plateau_patience=2), losses) is None
    reason = stop_reason(StopRules(eval_steps=1, plateau_patience=2, plateau_min_delta=0.1), losses)
    assert reason is not None and "3 (step 1)" in reason


def test_kl_threshold_reads_the_latest_held_out_kl():
    rules = StopRules(eval_steps=1, kl_below=0.5)
    assert "0.4" in stop_reason(rules, history((3.0, 0.9), (2.9, 0.4)))
    assert stop_reason(rules, history((3.0, 0.9), (2.9, 0.5))) is not None  # at the threshold: stop
    assert stop_reason(rules, history((3.0, 0.4), (2.9, 0.6))) is None  # it went back up: go on


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"plateau_patience": 2}, "need stop.eval_steps"),
        ({"kl_below": 0.5}, "need stop.eval_steps"),
        ({"eval_steps": 0}, "eval_steps must be a positive integer"),
        ({"eval_steps": 1, "plateau_patience": 1.5}, "plateau_patience must be a positive integer"),
        ({"eval_steps": 1, "kl_below": -1.0}, "kl_below must be a finite number > 0"),
        ({"eval_steps": 1, "kl_below": float("inf")}, "kl_below must be a finite number > 0"),
        ({"plateau_min_delta": -0.1}, "plateau_min_delta must be a finite number >= 0"),
    ],
)
def test_bad_rules_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StopRules(**kwargs)


def test_callback_stops_training_and_checkpoints_that_step(tmp_path):
    callback = StopRulesCallback(StopRules(eval_steps=1, plateau_patience=1))
    args = TrainingArguments(output_dir=str(tmp_path), save_strategy="steps", report_to=[])
    state, control = TrainerState(), TrainerControl()
    state.log_history = history((2.0, 1))
    callback.on_evaluate(args, state, control)
    assert not control.should_training_stop and callback.reason is None
    state.log_history = history((2.0, 1), (2.0, 1))
    callback.on_evaluate(args, state, control)
    assert control.should_training_stop and control.should_save and "plateau" in callback.reason
