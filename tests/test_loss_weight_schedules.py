"""Loss-weight curricula: each schedule against its closed form, logged every step, the same after a resume."""

from __future__ import annotations

import math

import pytest
from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer

from hf_distill import KDTrainer
from hf_distill.trainers.loss_schedules import parse_weight_schedule


def expected(kind: str, start: float, end: float, step: int, total: int, switch: int = 0) -> float:
    progress = min(step, total) / total
    if kind == "linear":
        return start + (end - start) * progress
    if kind == "cosine":
        return end + (start - end) / 2 * (1 + math.cos(math.pi * progress))
    if kind == "step":
        return start if step < switch else end
    return start


@pytest.mark.parametrize("step", [0, 1, 3, 5, 10, 14])
@pytest.mark.parametrize("kind", ["constant", "linear", "cosine"])
def test_smooth_schedules_follow_their_formulas(kind, step):
    text = kind if kind == "constant" else f"{kind}:0.9"
    value = parse_weight_schedule("alpha", text).value(0.1, step, 10)
    assert value == pytest.approx(expected(kind, 0.1, 0.9, step, 10))


@pytest.mark.parametrize("step", [0, 2, 3, 4, 9])
def test_step_schedule_is_zero_until_k_then_w(step):
    value = parse_weight_schedule("hidden_loss_weight", "step:3:2.5").value(0.0, step, 10)
    assert value == (0.0 if step < 3 else 2.5)


@pytest.mark.parametrize(
    "schedules, message",
    [
        ({"alpha": "linear:1.5"}, "alpha must be in"),
        ({"alpha": "warmup:1"}, "unknown kind"),
        ({"alpha": "linear"}, "wrong number of fields"),
        ({"alpha": "step:x:1"}, "must be numbers"),
        ({"temperature_end": "linear:1"}, "not a schedulable weight"),
        ({"hidden_loss_weight": "linear:1"}, "not a schedulable weight"),
    ],
)
def test_bad_schedules_are_refused_at_construction(tmp_path, schedules, message):
    with pytest.raises(ValueError, match=message):
        kd_args(tmp_path, loss_weight_schedules=schedules)


def test_schedules_parse_from_a_json_flag(tmp_path):
    args = kd_args(tmp_path, loss_weight_schedules='{"alpha": "cosine:0.2"}')
    assert args.weight_schedules()["alpha"] == parse_weight_schedule("alpha", "cosine:0.2")


def run(output_dir, max_steps=4, resume=None, save_steps=None):
    trainer = KDTrainer(
        model=make_tiny_llama(seed=0),
        teacher_model=make_tiny_llama(seed=1),
        args=kd_args(
            output_dir,
            max_steps=max_steps,
            alpha=0.2,
            loss_weight_schedules={"alpha": "linear:0.8"},
            save_strategy="steps" if save_steps else "no",
            save_steps=save_steps or 500,
        ),
        train_dataset=make_text_dataset(),
        processing_class=make_word_tokenizer(),
    )
    trainer.train(resume_from_checkpoint=resume)
    return [(e["step"], e["alpha"], e["loss"]) for e in trainer.state.log_history if "alpha" in e]


def test_alpha_schedule_is_logged_each_step_and_restored_on_resume(tmp_path):
    full = run(tmp_path / "full")
    assert [alpha for _, alpha, _ in full] == pytest.approx([expected("linear", 0.2, 0.8, s, 4) for s in range(4)])
    run(tmp_path / "cut", save_steps=2)  # writes checkpoint-2 (and runs on; only the checkpoint is used)
    resumed = run(tmp_path / "cut", resume=str(tmp_path / "cut" / "checkpoint-2"))[-2:]  # after the restored log
    assert [step for step, _, _ in resumed] == [3, 4]
    assert [a for _, a, _ in resumed] == pytest.approx([a for _, a, _ in full[2:]])
    assert [loss for _, _, loss in resumed] == pytest.approx([loss for _, _, loss in full[2:]], rel=1e-5)


def test_feature_weight_step_schedule_switches_the_term_on(tmp_path):
    from test_feature_trainer import build

    trainer = build(
        tmp_path, max_steps=4, hidden_loss_weight=0.0, loss_weight_schedules={"hidden_loss_weight": "step:2:1.5"}
    )
    assert trainer.active_feature_terms["hidden_loss_weight"]
    trainer.train()
    logged = [e["hidden_loss_weight"] for e in trainer.state.log_history if "hidden_loss_weight" in e]
    assert logged == [0.0, 0.0, 1.5, 1.5]


def test_cross_tokenizer_teacher_follows_the_alpha_schedule_and_trial_weights(tmp_path):
    from test_crosstok_trainer import _trainer

    trainer = _trainer(tmp_path, max_steps=3, alpha=0.1, loss_weight_schedules={"alpha": "step:2:0.9"})
    trainer.train()
    assert [e["alpha"] for e in trainer.state.log_history if "alpha" in e] == [0.1, 0.1, 0.9]
    assert trainer.teacher_source.distiller.alpha == 0.9  # the value its loss used in the last step
    trainer.args.uld_weight = 0.25  # what a search trial does to args
    trainer.reload_loss_settings()
    assert trainer.teacher_source.distiller.spec.uld_weight == 0.25
