"""Diagnostics: each statistic against an independent float64 reference; sampling; the warning rules."""

from __future__ import annotations

import pytest
import torch
from diagnostics_reference import reference_diagnostics

from hf_distill.diagnostics import (
    WatchThresholds,
    check_history,
    diagnostic_sums,
    sample_rows,
    sampled_diagnostic_sums,
    summarize,
)
from hf_distill.losses.teacher_mixture import TeacherMixture
from hf_distill.losses.token_kd import LogitSource


def _random_logits(rows: int, vocab: int, seed: int, scale: float = 3.0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(rows, vocab, generator=g) * scale
    student = teacher * 0.7 + torch.randn(rows, vocab, generator=g) * scale  # correlated, not equal
    targets = torch.randint(0, vocab, (rows,), generator=g)
    # Make some labels the teacher's top-1 so both calibration terms have hits and misses.
    targets[::3] = teacher[::3].argmax(-1)
    return student, teacher, targets


def _assert_matches(result: dict[str, float], expected: dict[str, float]) -> None:
    assert set(result) == set(expected)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=2e-5, abs=2e-6), key


@pytest.mark.parametrize("rows,vocab,seed", [(37, 50, 0), (64, 3, 1), (300, 1000, 2), (5, 20000, 3)])
def test_statistics_match_float64_reference_on_random_logits(rows, vocab, seed):
    student, teacher, targets = _random_logits(rows, vocab, seed)
    result = summarize(diagnostic_sums(student, teacher, targets))
    _assert_matches(result, reference_diagnostics(student.numpy(), teacher.numpy(), targets.numpy()))


def test_sums_add_across_batches_like_one_batch():
    student, teacher, targets = _random_logits(90, 40, 4)
    split = diagnostic_sums(student[:30], teacher[:30], targets[:30]) + diagnostic_sums(
        student[30:], teacher[30:], targets[30:]
    )
    _assert_matches(summarize(split), reference_diagnostics(student.numpy(), teacher.numpy(), targets.numpy()))


def test_bfloat16_logits_are_read_as_given():
    student, teacher, targets = _random_logits(16, 100, 5)
    student, teacher = student.bfloat16(), teacher.bfloat16()
    result = summarize(diagnostic_sums(student, teacher, targets))
    _assert_matches(result, reference_diagnostics(student.float().numpy(), teacher.float().numpy(), targets.numpy()))


def test_masked_logits_have_probability_zero_in_every_statistic():
    """-inf logits (a masked vocabulary, on either side) count as probability 0; the float64 reference gets -700
    there instead (probability ~1e-304, so its p log p terms are finite and negligible)."""
    student, teacher, targets = _random_logits(40, 60, 9)
    teacher[:, 50:] = float("-inf")
    student[:, 55:] = float("-inf")
    targets = targets.clamp_max(49)
    result = summarize(diagnostic_sums(student, teacher, targets))
    stand_in = [torch.where(x.isinf(), torch.full_like(x, -700.0), x).double().numpy() for x in (student, teacher)]
    _assert_matches(result, reference_diagnostics(*stand_in, targets.numpy()))


def test_no_position_and_no_targets():
    empty = torch.zeros(0, 10)
    assert summarize(diagnostic_sums(empty, empty)) == {}
    student, teacher, _ = _random_logits(4, 10, 6)
    assert "student_ece" not in summarize(diagnostic_sums(student, teacher), with_calibration=False)


def test_sample_rows_picks_distinct_valid_positions():
    targets = torch.full((100,), -100)
    valid = torch.tensor([3, 10, 11, 40, 41, 42, 77, 99])
    targets[valid] = 5
    assert sample_rows(targets, 50).tolist() == valid.tolist()
    picked = sample_rows(targets, 4, torch.Generator().manual_seed(0))
    assert len(set(picked.tolist())) == 4 and set(picked.tolist()) <= set(valid.tolist())
    assert picked.tolist() == sorted(picked.tolist())


def test_sampled_sums_from_fused_sources_match_reference_on_the_sampled_rows():
    g = torch.Generator().manual_seed(7)
    hidden, vocab = 16, 30
    s_states, t_states = torch.randn(40, hidden, generator=g), torch.randn(40, hidden, generator=g)
    s_head, t_head = torch.randn(vocab + 2, hidden, generator=g), torch.randn(vocab, hidden, generator=g)
    targets = torch.randint(0, vocab, (40,), generator=g)
    targets[::4] = -100
    student = LogitSource(s_states.requires_grad_(), s_head)
    teacher = LogitSource(t_states, t_head)
    sums = sampled_diagnostic_sums(student, teacher, targets, 12, torch.Generator().manual_seed(1))
    rows = sample_rows(targets, 12, torch.Generator().manual_seed(1))
    s_logits = (s_states.detach().double() @ s_head[:vocab].double().t()).numpy()[rows.numpy()]
    t_logits = (t_states.double() @ t_head.double().t()).numpy()[rows.numpy()]
    assert sums[0] == 12
    _assert_matches(summarize(sums), reference_diagnostics(s_logits, t_logits, targets[rows].numpy()))


def test_sampled_sums_against_a_teacher_mixture_use_the_mixed_distribution():
    g = torch.Generator().manual_seed(8)
    s, t1, t2 = (torch.randn(10, 12, generator=g) * 2 for _ in range(3))
    targets = torch.randint(0, 12, (10,), generator=g)
    mixture = TeacherMixture([LogitSource(t1), LogitSource(t2)], (0.25, 0.75))
    sums = sampled_diagnostic_sums(LogitSource(s), mixture, targets, 100)
    mixed = (0.25 * torch.softmax(t1.double(), -1) + 0.75 * torch.softmax(t2.double(), -1)).log()
    _assert_matches(summarize(sums), reference_diagnostics(s.numpy(), mixed.numpy(), targets.numpy()))


def _logs(**series):
    length = len(next(iter(series.values())))
    return [{f"diag_{key}": values[i] for key, values in series.items()} for i in range(length)]


def test_rules_fire_on_their_symptom_and_stay_quiet_on_a_healthy_history():
    thresholds = WatchThresholds(window=4)
    healthy = _logs(
        kl=[1.0, 0.8, 0.7, 0.6],
        top1_agreement=[0.5, 0.6, 0.65, 0.7],
        prob_correlation=[0.7, 0.82, 0.85, 0.9],
        student_entropy_bits=[3.0, 3.1, 3.0, 2.9],
        teacher_entropy_bits=[3.0] * 4,
    )
    assert check_history(healthy, thresholds) == {}
    broken = _logs(
        kl=[1.0, 1.1, 2.0, 4.0],
        top1_agreement=[0.3, 0.301, 0.299, 0.3],
        prob_correlation=[0.5, 0.4, 0.3, 0.2],
        student_entropy_bits=[3.0, 2.0, 0.5, 0.1],
        teacher_entropy_bits=[3.0] * 4,
    )
    found = check_history(broken, thresholds)
    assert set(found) == {"kl_rising", "agreement_flat", "correlation_low", "entropy_collapse"}
    assert "4" in found["kl_rising"] and "0.1 bits" in found["entropy_collapse"]


def test_rules_need_a_full_window_and_spare_a_converged_student():
    thresholds = WatchThresholds(window=4)
    assert check_history(_logs(kl=[1.0, 2.0, 4.0], prob_correlation=[0.1, 0.1, 0.1]), thresholds) == {}
    converged = _logs(top1_agreement=[0.97, 0.97, 0.97, 0.97], student_entropy_bits=[0.1] * 4,
                      teacher_entropy_bits=[0.2] * 4)  # fmt: skip
    assert check_history(converged, thresholds) == {}
    with pytest.raises(ValueError):
        WatchThresholds(window=1)
