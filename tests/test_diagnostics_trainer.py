"""KDTrainer logs the diagnostics, and its watch warns on a broken run (learning rate far too high) only."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer
from diagnostics_reference import reference_diagnostics

from hf_distill import KDTrainer

DIAG_KEYS = {
    "diag_kl",
    "diag_top1_agreement",
    "diag_top5_overlap",
    "diag_prob_correlation",
    "diag_teacher_entropy_bits",
    "diag_student_entropy_bits",
    "diag_teacher_ece",
    "diag_student_ece",
}


def _near_copy(teacher: torch.nn.Module, noise: float) -> torch.nn.Module:
    """A student that starts near its teacher, so a healthy run improves from the first steps."""
    student = copy.deepcopy(teacher)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in student.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * noise * param.std().clamp_min(1e-3))
    return student


def _watch_records(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "hf_distill.diagnostics.watch"]


def _run(tmp_path, learning_rate: float) -> KDTrainer:
    teacher = make_tiny_llama(seed=0)
    args = kd_args(
        tmp_path, max_steps=14, learning_rate=learning_rate, warmup_steps=4, lr_scheduler_type="cosine",
        per_device_train_batch_size=8, temperature=1.0, alpha=1.0,
    )  # fmt: skip
    trainer = KDTrainer(
        model=_near_copy(teacher, 0.4),
        teacher_model=teacher,
        args=args,
        train_dataset=make_text_dataset(num_rows=64),
        processing_class=make_word_tokenizer(),
    )
    trainer.train()
    return trainer


def test_watch_warns_on_a_broken_run_and_not_on_a_healthy_one(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="hf_distill.diagnostics.watch"):
        healthy = _run(tmp_path / "healthy", 2e-3)
    assert healthy.diagnostics_watch.warnings == {}
    assert not _watch_records(caplog)
    logged = [entry for entry in healthy.state.log_history if "diag_kl" in entry]
    assert len(logged) == 14 and DIAG_KEYS <= set(logged[0])
    assert logged[-1]["diag_kl"] < logged[0]["diag_kl"]

    with caplog.at_level(logging.WARNING, logger="hf_distill.diagnostics.watch"):
        broken = _run(tmp_path / "broken", 30.0)
    warnings = broken.diagnostics_watch.warnings
    assert {"kl_rising", "entropy_collapse"} <= set(warnings)
    # Once per symptom, with the numbers in the message.
    assert len(_watch_records(caplog)) == len(warnings)
    assert "bits against the teacher's" in warnings["entropy_collapse"]


def test_eval_logs_diagnostics_equal_to_the_reference_and_zero_positions_turns_them_off(tmp_path):
    teacher, student = make_tiny_llama(seed=1), make_tiny_llama(seed=0)
    data = make_text_dataset(num_rows=4)
    args = kd_args(tmp_path, per_device_eval_batch_size=4, diagnostics_positions=10_000)
    trainer = KDTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=data, eval_dataset=data,
        processing_class=make_word_tokenizer(),
    )  # fmt: skip
    metrics = trainer.evaluate()
    batch = next(iter(trainer.get_eval_dataloader()))
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    valid = labels != -100
    expected = reference_diagnostics(s[valid].numpy(), t[valid].numpy(), labels[valid].numpy())
    for key, value in expected.items():
        assert metrics[f"eval_diag_{key}"] == pytest.approx(value, rel=1e-4, abs=1e-5), key

    off = KDTrainer(
        model=student, teacher_model=teacher, args=kd_args(tmp_path, diagnostics_positions=0), eval_dataset=data,
        train_dataset=data, processing_class=make_word_tokenizer(),
    )  # fmt: skip
    assert off.diagnostics_watch is None
    assert not any("diag_" in key for key in off.evaluate())


def test_precomputed_teacher_says_once_that_it_logs_no_diagnostics(tmp_path, caplog):
    """Top-k columns are no full distribution: the run says so once instead of silently logging no diag_*."""
    from datasets import Dataset

    from hf_distill.teachers.precompute import PrecomputeConfig, precompute_teacher_signal

    rows = Dataset.from_dict({"input_ids": [[1] + [5 + (i + j) % 50 for j in range(11)] for i in range(8)]})
    config = PrecomputeConfig(mode="topk", k=8, value_dtype="float32", temperature=2.0)
    signal = precompute_teacher_signal(
        make_tiny_llama(seed=1), make_word_tokenizer(), rows, tmp_path / "signal", config, progress=False
    )
    trainer = KDTrainer(
        make_tiny_llama(seed=0),
        args=kd_args(tmp_path / "run", max_steps=3, logging_steps=1, diagnostics_positions=16),
        train_dataset=signal,
        processing_class=make_word_tokenizer(),
    )
    with caplog.at_level(logging.WARNING, logger="hf_distill.trainers.kd_trainer"):
        trainer.train()
    said = [r for r in caplog.records if "no diag_* metrics" in r.getMessage()]
    assert len(said) == 1 and "precomputed" in said[0].getMessage()
    assert not any(key.startswith("diag_") for entry in trainer.state.log_history for key in entry)
