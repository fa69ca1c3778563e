"""KDTrainer with no teacher model, learning from precomputed columns: same loss as the live teacher
(independent float64 formula) when k covers the vocabulary, and the same loss curve over a few steps."""

from __future__ import annotations

import pytest
import torch
from conftest import kd_args, make_tiny_llama, make_word_tokenizer, reference_kd_loss
from test_offline_precompute import token_rows

from hf_distill import KDTrainer
from hf_distill.teachers.precompute import PrecomputeConfig, precompute_teacher_signal


def capture(tmp_path, teacher, rows, **config):
    return precompute_teacher_signal(
        teacher, make_word_tokenizer(), rows, tmp_path / "signal", PrecomputeConfig(**config), progress=False
    )


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("temperature, alpha", [(1.0, 0.5), (2.0, 0.8)])
def test_full_vocabulary_columns_give_the_live_teacher_loss(tmp_path, fused, temperature, alpha):
    teacher = make_tiny_llama(seed=1, num_layers=3)
    rows = token_rows(8, seed=2)
    signal = capture(tmp_path, teacher, rows, mode="topk", k=64, temperature=temperature, value_dtype="float32")
    student = make_tiny_llama(seed=0)
    trainer = KDTrainer(
        model=student,
        args=kd_args(tmp_path / "run", temperature=temperature, alpha=alpha, fused_lm_head=fused),
        train_dataset=signal,
        processing_class=make_word_tokenizer(),
    )
    assert trainer.teacher_model is None and trainer.teacher_source.kind == "precomputed"
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    expected = reference_kd_loss(student, teacher, batch, temperature, alpha)
    assert loss.item() == pytest.approx(expected.item(), rel=2e-6)


def _loss_curve(tmp_path, student_seed, teacher=None, dataset=None, steps=4, **overrides):
    trainer = KDTrainer(
        model=make_tiny_llama(seed=student_seed),
        teacher_model=teacher,
        args=kd_args(tmp_path, max_steps=steps, optim="adamw_torch", learning_rate=5e-3, **overrides),
        train_dataset=dataset,
        processing_class=make_word_tokenizer(),
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return [(entry["loss"], entry["teacher_kl"], entry["grad_norm"]) for entry in logs]


def test_training_from_columns_follows_the_live_teacher_loss_curve(tmp_path):
    teacher, rows = make_tiny_llama(seed=1), token_rows(16, seed=3)
    signal = capture(tmp_path, teacher, rows, mode="topk", k=64, temperature=2.0, value_dtype="float32")
    offline = _loss_curve(tmp_path / "offline", 0, dataset=signal, temperature=2.0)
    live = _loss_curve(tmp_path / "live", 0, teacher=teacher, dataset=rows, temperature=2.0)
    assert len(offline) == len(live) == 4
    assert len({loss for loss, _, _ in offline}) == 4  # four distinct points, not a degenerate curve
    torch.testing.assert_close(torch.tensor(offline), torch.tensor(live), rtol=1e-5, atol=1e-6)


def test_sampled_columns_estimate_the_live_loss(tmp_path):
    """255 draws per position: the batch loss is within a few percent of the exact live-teacher loss."""
    teacher, rows = make_tiny_llama(seed=1), token_rows(8, seed=4, min_len=8)
    signal = capture(tmp_path, teacher, rows, mode="sampled", num_samples=255, temperature=1.0)
    student = make_tiny_llama(seed=0)
    trainer = KDTrainer(
        model=student,
        args=kd_args(tmp_path / "run", temperature=1.0, alpha=1.0, per_device_train_batch_size=8),
        train_dataset=signal,
        processing_class=make_word_tokenizer(),
    )
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    expected = reference_kd_loss(student, teacher, batch, 1.0, 1.0)
    assert loss.item() == pytest.approx(expected.item(), rel=0.05)
    assert loss.item() != pytest.approx(expected.item(), rel=1e-6)  # it is an estimate, not the dense loss


def test_live_teacher_takes_precedence_over_columns(tmp_path):
    teacher, rows = make_tiny_llama(seed=1), token_rows(8, seed=2)
    signal = capture(tmp_path, teacher, rows, mode="topk", k=2, temperature=1.0)
    student = make_tiny_llama(seed=0)
    trainer = KDTrainer(
        model=student,
        teacher_model=teacher,
        args=kd_args(tmp_path / "run", temperature=1.0),
        train_dataset=signal,
        processing_class=make_word_tokenizer(),
    )
    assert trainer.teacher_source.kind == "live"
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    assert loss.item() == pytest.approx(reference_kd_loss(student, teacher, batch, 1.0, 0.5).item(), rel=1e-5)
