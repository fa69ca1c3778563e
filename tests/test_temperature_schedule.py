"""Temperature schedules against their closed forms, and their effect inside KDTrainer."""

from __future__ import annotations

import math

import pytest
from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer

from hf_distill import KDTrainer
from hf_distill.trainers.schedules import scheduled_temperature


@pytest.mark.parametrize("step", [0, 3, 5, 10, 12])
def test_linear_and_cosine_follow_their_formulas(step):
    start, end, total = 6.0, 2.0, 10
    t = min(step, total) / total
    assert scheduled_temperature("linear", start, end, step, total) == pytest.approx(start + (end - start) * t)
    cosine = end + (start - end) / 2 * (1 + math.cos(math.pi * t))
    assert scheduled_temperature("cosine", start, end, step, total) == pytest.approx(cosine)
    assert scheduled_temperature("constant", start, end, step, total) == start


def test_unknown_schedule_and_bad_end_temperature_are_refused(tmp_path):
    with pytest.raises(ValueError, match="schedule"):
        kd_args(tmp_path, temperature_schedule="step")
    with pytest.raises(ValueError, match="temperature"):
        kd_args(tmp_path, temperature_schedule="linear", temperature_end=0.0)


def test_trainer_logs_the_scheduled_temperature(tmp_path):
    trainer = KDTrainer(
        model=make_tiny_llama(seed=0),
        teacher_model=make_tiny_llama(seed=1),
        args=kd_args(tmp_path, max_steps=4, temperature=4.0, temperature_schedule="linear", temperature_end=1.0),
        train_dataset=make_text_dataset(),
        processing_class=make_word_tokenizer(),
    )
    trainer.train()
    temps = [e["temperature"] for e in trainer.state.log_history if "temperature" in e]
    assert temps == pytest.approx([4.0, 3.25, 2.5, 1.75])
