"""Hidden-state and attention losses against independent float64 formulas written out here."""

import math

import pytest
import torch

from hf_distill.losses.attention import attention_kl_loss, match_head_counts
from hf_distill.losses.feature import hidden_state_loss


def _per_token_reference(s_row, t_row, kind):
    s, t = [float(x) for x in s_row], [float(x) for x in t_row]
    if kind == "mse":
        return sum((a - b) ** 2 for a, b in zip(s, t)) / len(s)
    ns, nt = math.sqrt(sum(a * a for a in s)), math.sqrt(sum(b * b for b in t))
    if kind == "normalized_mse":
        return sum((a / ns - b / nt) ** 2 for a, b in zip(s, t))
    return 1.0 - sum(a * b for a, b in zip(s, t)) / (ns * nt)


@pytest.mark.parametrize("kind", ["mse", "normalized_mse", "cosine"])
def test_hidden_losses_match_formula_over_masked_tokens(kind):
    torch.manual_seed(0)
    student = torch.randn(2, 4, 6, dtype=torch.bfloat16)
    teacher = torch.randn(2, 4, 6) * 3
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]], dtype=torch.bool)
    expected = sum(
        _per_token_reference(student[b, i], teacher[b, i], kind) for b in range(2) for i in range(4) if mask[b, i]
    )
    got = hidden_state_loss(student, teacher, mask, kind)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_hidden_loss_ignores_masked_positions_and_teacher_gets_no_grad():
    student = torch.randn(1, 3, 4, requires_grad=True)
    teacher = torch.randn(1, 3, 4, requires_grad=True)
    mask = torch.tensor([[True, False, True]])
    loss = hidden_state_loss(student, teacher, mask, "mse")
    changed = teacher.detach().clone()
    changed[0, 1] += 100.0
    assert hidden_state_loss(student, changed, mask, "mse").item() == pytest.approx(loss.item())
    loss.backward()
    assert teacher.grad is None
    assert torch.all(student.grad[0, 1] == 0) and student.grad[0, 0].abs().sum() > 0


def test_hidden_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="project the student"):
        hidden_state_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="Unknown hidden-state loss"):
        hidden_state_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), kind="l1")
    with pytest.raises(ValueError, match="Mask shape"):
        hidden_state_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.ones(2, 2, dtype=torch.bool))


def _random_causal_attention(batch, heads, seq, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, heads, seq, seq, generator=g)
    future = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


def test_attention_kl_matches_formula_same_heads():
    student = _random_causal_attention(2, 3, 5, seed=1)
    teacher = _random_causal_attention(2, 3, 5, seed=2)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 1, 1]], dtype=torch.bool)
    expected = 0.0
    for b in range(2):
        for q in range(5):
            if not mask[b, q]:
                continue
            per_head = []
            for h in range(3):
                kl = 0.0
                for k in range(5):
                    p, r = float(teacher[b, h, q, k]), float(student[b, h, q, k])
                    if p > 0:
                        kl += p * math.log(p / r)
                per_head.append(kl)
            expected += sum(per_head) / 3
    got = attention_kl_loss(student, teacher, mask)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_head_group_averaging_hand_computed():
    # Teacher 4 heads -> student 2 heads: teacher heads (0, 1) and (2, 3) are averaged.
    # Query 0 sees only key 0 (probability 1 everywhere: contributes 0).
    teacher_q1 = [[0.2, 0.8], [0.6, 0.4], [0.5, 0.5], [0.9, 0.1]]  # groups average to [0.4, 0.6], [0.7, 0.3]
    student_q1 = [[0.5, 0.5], [0.7, 0.3]]
    teacher = torch.zeros(1, 4, 2, 2)
    student = torch.zeros(1, 2, 2, 2)
    teacher[0, :, 0, 0] = 1.0
    student[0, :, 0, 0] = 1.0
    teacher[0, :, 1] = torch.tensor(teacher_q1)
    student[0, :, 1] = torch.tensor(student_q1)
    # Head 0: KL([0.4, 0.6] || [0.5, 0.5]); head 1: identical rows -> 0; averaged over the 2 heads.
    expected = 0.5 * (0.4 * math.log(0.4 / 0.5) + 0.6 * math.log(0.6 / 0.5))
    assert attention_kl_loss(student, teacher).item() == pytest.approx(expected, rel=1e-5)
    _, grouped = match_head_counts(student, teacher)
    assert torch.allclose(grouped[0, :, 1], torch.tensor([[0.4, 0.6], [0.7, 0.3]]))


def test_student_with_more_heads_matches_each_teacher_head():
    teacher = _random_causal_attention(1, 1, 3, seed=3)
    student = _random_causal_attention(1, 2, 3, seed=4)
    separate = sum(attention_kl_loss(student[:, h : h + 1], teacher) for h in range(2)) / 2
    assert attention_kl_loss(student, teacher).item() == pytest.approx(separate.item(), rel=1e-6)


def test_mean_head_reduction_and_indivisible_heads():
    teacher = _random_causal_attention(1, 3, 4, seed=5)
    student = _random_causal_attention(1, 2, 4, seed=6)
    with pytest.raises(ValueError, match="head_reduction='mean'"):
        attention_kl_loss(student, teacher)
    t_mean, s_mean = teacher.mean(1), student.mean(1)
    expected = sum(
        float(t_mean[0, q, k]) * math.log(float(t_mean[0, q, k]) / float(s_mean[0, q, k]))
        for q in range(4)
        for k in range(q + 1)
    )
    got = attention_kl_loss(student, teacher, head_reduction="mean")
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_attention_kl_gradient_reaches_student_only_and_is_finite_with_zeros():
    student = _random_causal_attention(1, 2, 4, seed=7).requires_grad_(True)
    teacher = _random_causal_attention(1, 2, 4, seed=8).requires_grad_(True)
    loss = attention_kl_loss(student, teacher)
    loss.backward()
    assert teacher.grad is None
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
