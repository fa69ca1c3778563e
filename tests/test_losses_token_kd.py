"""Token KD losses against float64 textbook formulas written out independently here."""

from __future__ import annotations

import math

import pytest
import torch

from hf_distill.losses import (
    DIVERGENCES,
    KDLossSpec,
    LogitSource,
    causal_targets,
    divergence_rows,
    token_kd_loss,
    token_kd_loss_from_logits,
)


def reference_divergence(name: str, s: torch.Tensor, t: torch.Tensor, beta: float = 0.5, skew: float = 0.1):
    """Per-row divergences in float64, straight from their definitions (autograd supplies gradients)."""
    s, t = s.double(), t.double()
    q, p = torch.softmax(s, -1), torch.softmax(t, -1)

    def kl(a, b):
        return (a * (a.log() - b.log())).sum(-1)

    if name == "forward_kl":
        return kl(p, q)
    if name == "reverse_kl":
        return kl(q, p)
    if name == "jsd":
        if beta == 0:
            return kl(p, q)
        if beta == 1:
            return kl(q, p)
        m = beta * p + (1 - beta) * q
        return beta * kl(p, m) + (1 - beta) * kl(q, m)
    if name == "tvd":
        return 0.5 * (p - q).abs().sum(-1)
    if name == "skew_forward_kl":
        return kl(p, skew * p + (1 - skew) * q)
    if name == "skew_reverse_kl":
        return kl(q, skew * q + (1 - skew) * p)
    if name == "mse":
        return ((p - q) ** 2).sum(-1)
    if name == "cosine":
        return 1 - (s * t).sum(-1) / (s.norm(dim=-1) * t.norm(dim=-1))
    raise AssertionError(name)


@pytest.mark.parametrize("name", DIVERGENCES)
def test_row_values_and_gradients_match_float64_definitions(name):
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(6, 11, generator=gen) * 3
    t = torch.randn(6, 11, generator=gen) * 3
    terms = divergence_rows(name, s, t)

    s64 = s.double().requires_grad_(True)
    ref = reference_divergence(name, s64, t)
    ref.sum().backward()
    torch.testing.assert_close(terms.values.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms.grad_s.double(), s64.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.25, 0.5, 1.0])
def test_jsd_beta_endpoints_and_interior(beta):
    gen = torch.Generator().manual_seed(2)
    s, t = torch.randn(4, 7, generator=gen), torch.randn(4, 7, generator=gen)
    from hf_distill.losses import DivergenceParams

    got = divergence_rows("jsd", s, t, DivergenceParams(beta=beta)).values.double()
    torch.testing.assert_close(got, reference_divergence("jsd", s, t, beta=beta), rtol=1e-5, atol=1e-7)


def test_hand_computed_forward_kl_two_tokens():
    # p = (0.5, 0.5) from equal teacher logits; q = softmax(0, ln 3) = (0.25, 0.75).
    s = torch.tensor([[0.0, math.log(3.0)]])
    t = torch.zeros(1, 2)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert divergence_rows("forward_kl", s, t).values.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", DIVERGENCES)
def test_divergences_vanish_on_identical_distributions(name):
    x = torch.randn(3, 9)
    assert divergence_rows(name, x, x.clone()).values.abs().max().item() < 1e-6


def reference_batch_loss(student_logits, teacher_logits, labels, divergence, temperature, alpha):
    """alpha * T^2 * sum_t D(teacher_t || student_t) + (1 - alpha) * sum_t CE_t, float64, causal shift."""
    s = student_logits[:, :-1].double()
    t = teacher_logits[:, :-1].double()
    y = labels[:, 1:]
    valid = y != -100
    d = reference_divergence(divergence, s[valid] / temperature, t[valid] / temperature)
    ce = torch.nn.functional.cross_entropy(s[valid], y[valid], reduction="sum")
    return alpha * temperature**2 * d.sum() + (1 - alpha) * ce


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd", "tvd"])
@pytest.mark.parametrize("chunk_size", [1, 3, None])
def test_chunked_loss_and_gradient_equal_naive(divergence, chunk_size):
    gen = torch.Generator().manual_seed(3)
    b, seq, vocab = 2, 7, 13
    student = (torch.randn(b, seq, vocab, generator=gen) * 2).requires_grad_(True)
    teacher = torch.randn(b, seq, vocab, generator=gen) * 2
    labels = torch.randint(0, vocab, (b, seq), generator=gen)
    labels[0, :3] = -100
    spec = KDLossSpec(divergence=divergence, temperature=2.0, alpha=0.7, chunk_size=chunk_size)

    terms = token_kd_loss_from_logits(student, teacher, labels, spec)
    terms.loss.backward()

    ref_student = student.detach().double().requires_grad_(True)
    ref = reference_batch_loss(ref_student, teacher, labels, divergence, 2.0, 0.7)
    ref.backward()
    assert terms.loss.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(student.grad.double(), ref_student.grad, rtol=1e-5, atol=1e-7)
    assert int(terms.num_tokens) == int((labels[:, 1:] != -100).sum())


def test_fused_hidden_state_form_equals_logits_form_including_weight_gradient():
    gen = torch.Generator().manual_seed(4)
    tokens, hidden, vocab = 10, 6, 17
    h = torch.randn(tokens, hidden, generator=gen, requires_grad=True)
    w = torch.randn(vocab, hidden, generator=gen, requires_grad=True)
    th = torch.randn(tokens, 5, generator=gen)
    tw = torch.randn(vocab, 5, generator=gen)
    targets = torch.randint(0, vocab, (tokens,), generator=gen)
    targets[[1, 4]] = -100
    spec = KDLossSpec(divergence="forward_kl", temperature=1.5, alpha=0.4, chunk_size=3)

    fused = token_kd_loss(LogitSource(h, w), LogitSource(th, tw), targets, spec)
    fused.loss.backward()

    h64 = h.detach().double().requires_grad_(True)
    w64 = w.detach().double().requires_grad_(True)
    s = h64 @ w64.t()
    t = th.double() @ tw.double().t()
    valid = targets != -100
    d = reference_divergence("forward_kl", s[valid] / 1.5, t[valid] / 1.5)
    ce = torch.nn.functional.cross_entropy(s[valid], targets[valid], reduction="sum")
    ref = 0.4 * 1.5**2 * d.sum() + 0.6 * ce
    ref.backward()
    assert fused.loss.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(h.grad.double(), h64.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("masked", [False, True], ids=["contiguous-rows", "masked-rows"])
@pytest.mark.parametrize("teacher_form", ["logits", "hidden"])
@pytest.mark.parametrize("chunk_size", [5, None])
def test_blocks_smaller_than_chunks_equal_float64_reference(monkeypatch, masked, teacher_form, chunk_size):
    """Chunks are projected once and then worked through in row blocks: force 2-row blocks so that every
    chunk spans several blocks (and ends in a partial one), for both teacher forms and both row layouts."""
    import hf_distill.losses.token_kd as token_kd_module

    gen = torch.Generator().manual_seed(11)
    tokens, hidden, vocab, temperature, alpha = 13, 6, 17, 2.0, 0.6
    monkeypatch.setattr(token_kd_module, "BLOCK_ELEMENTS", 2 * vocab)
    h = torch.randn(tokens, hidden, generator=gen, requires_grad=True)
    w = torch.randn(vocab, hidden, generator=gen, requires_grad=True)
    th = torch.randn(tokens, 4, generator=gen)
    tw = torch.randn(vocab, 4, generator=gen) * 2
    t_logits = th @ tw.t()
    targets = torch.randint(0, vocab, (tokens,), generator=gen)
    if masked:
        targets[[0, 4, 5, 11]] = -100
    teacher = LogitSource(t_logits) if teacher_form == "logits" else LogitSource(th, tw)
    spec = KDLossSpec(divergence="forward_kl", temperature=temperature, alpha=alpha, chunk_size=chunk_size)

    terms = token_kd_loss(LogitSource(h, w), teacher, targets, spec)
    terms.loss.backward()

    h64 = h.detach().double().requires_grad_(True)
    w64 = w.detach().double().requires_grad_(True)
    s = h64 @ w64.t()
    valid = targets != -100
    d = reference_divergence("forward_kl", s[valid] / temperature, t_logits.double()[valid] / temperature)
    ce = torch.nn.functional.cross_entropy(s[valid], targets[valid], reduction="sum")
    ref = alpha * temperature**2 * d.sum() + (1 - alpha) * ce
    ref.backward()
    assert terms.loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert terms.hard_sum.item() == pytest.approx(ce.item(), rel=1e-6)
    assert terms.top1_agree.item() == int((s[valid].argmax(-1) == t_logits[valid].argmax(-1)).sum())
    torch.testing.assert_close(h.grad.double(), h64.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-5, atol=1e-6)


def test_bf16_inputs_are_evaluated_in_float32():
    gen = torch.Generator().manual_seed(5)
    student = torch.randn(1, 5, 9, generator=gen).bfloat16().requires_grad_(True)
    teacher = torch.randn(1, 5, 9, generator=gen).bfloat16()
    labels = torch.randint(0, 9, (1, 5), generator=gen)
    spec = KDLossSpec(temperature=1.0, alpha=0.5)
    terms = token_kd_loss_from_logits(student, teacher, labels, spec)
    ref = reference_batch_loss(student.detach().float(), teacher.float(), labels, "forward_kl", 1.0, 0.5)
    assert terms.loss.dtype == torch.float32
    assert terms.loss.item() == pytest.approx(ref.item(), rel=1e-6)
    terms.loss.backward()
    assert student.grad.dtype == torch.bfloat16


def test_padded_vocabularies_are_sliced_to_the_shared_range():
    gen = torch.Generator().manual_seed(6)
    student = torch.randn(1, 4, 10, generator=gen)
    teacher = torch.randn(1, 4, 12, generator=gen)
    labels = torch.randint(0, 10, (1, 4), generator=gen)
    spec = KDLossSpec(alpha=1.0)
    got = token_kd_loss_from_logits(student, teacher, labels, spec).loss
    ref = reference_batch_loss(student, teacher[..., :10], labels, "forward_kl", 1.0, 1.0)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)


def test_all_masked_batch_gives_zero_loss_and_zero_gradient():
    student = torch.randn(2, 4, 8, requires_grad=True)
    labels = torch.full((2, 4), -100)
    terms = token_kd_loss_from_logits(student, torch.randn(2, 4, 8), labels, KDLossSpec())
    terms.loss.backward()
    assert terms.loss.item() == 0.0
    assert torch.all(student.grad == 0)


def test_statistics_count_agreement_and_kl():
    student = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 0.0]]])
    teacher = torch.tensor([[[4.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[0, 1, 2]])
    terms = token_kd_loss_from_logits(student, teacher, labels, KDLossSpec(divergence="tvd"))
    assert terms.top1_agree.item() == 1.0  # first position agrees, second does not
    ref_kl = reference_divergence("forward_kl", student[0, :2], teacher[0, :2]).sum()
    assert terms.kl_sum.item() == pytest.approx(ref_kl.item(), rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"divergence": "kl"}, "Unknown divergence"),
        ({"divergence": "jsd", "beta": 2.0}, "beta"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_specs_raise_named_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KDLossSpec(**kwargs)


def test_non_finite_teacher_logits_are_rejected():
    teacher = torch.randn(1, 3, 5)
    teacher[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        token_kd_loss_from_logits(torch.randn(1, 3, 5), teacher, torch.tensor([[0, 1, 2]]), KDLossSpec())


def test_causal_targets_shift_left():
    labels = torch.tensor([[5, 6, 7], [8, -100, 9]])
    assert causal_targets(labels).tolist() == [6, 7, -100, -100, 9, -100]


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_metrics_off_keeps_loss_and_gradient(alpha):
    gen = torch.Generator().manual_seed(8)
    student = torch.randn(2, 6, 11, generator=gen, requires_grad=True)
    teacher = torch.randn(2, 6, 11, generator=gen)
    labels = torch.randint(0, 11, (2, 6), generator=gen)
    spec = KDLossSpec(temperature=2.0, alpha=alpha, with_metrics=False, chunk_size=4)
    terms = token_kd_loss_from_logits(student, teacher, labels, spec)
    terms.loss.backward()
    ref_student = student.detach().double().requires_grad_(True)
    ref = reference_batch_loss(ref_student, teacher, labels, "forward_kl", 2.0, alpha)
    ref.backward()
    assert terms.loss.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(student.grad.double(), ref_student.grad, rtol=1e-5, atol=1e-7)
    assert terms.top1_agree.item() == 0.0  # not computed


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
@pytest.mark.parametrize("vocab", [1000, 128_256, 262_144])
def test_chunk_plan_bounds_buffer_sizes(device_type, vocab):
    import hf_distill.losses.token_kd as token_kd_module

    spec = KDLossSpec()
    for buffers in (1, 2):
        plan = spec.chunk_plan(vocab, buffers, device_type)
        assert plan.rows * vocab * buffers <= token_kd_module.PROJECTED_CHUNK_ELEMENTS
        assert 1 <= plan.block_rows <= plan.rows
    cpu_block = spec.chunk_plan(vocab, 1, "cpu").block_rows * vocab * 4
    assert cpu_block <= 4 << 20  # fits in a CPU's last-level cache with room for the other temporaries
    assert spec.chunk_plan(vocab, 1, "cuda").block_rows >= spec.chunk_plan(vocab, 1, "cpu").block_rows
    explicit = KDLossSpec(chunk_size=3).chunk_plan(vocab, 2, device_type)
    assert explicit.rows == 3 and explicit.block_rows <= 3
    covered = [row for block in explicit.blocks(7) for row in range(7)[block]]
    assert covered == list(range(7))  # every row once, in order


@pytest.mark.parametrize("alpha", [0.0, 0.35, 1.0])
@pytest.mark.parametrize("with_metrics", [True, False])
def test_default_settings_shared_normaliser_path_equals_reference(alpha, with_metrics):
    """Forward KL at T = 1 takes its own block path (soft and hard terms share q): value, gradient, KL metric
    and CE against float64, including a teacher that masks part of the vocabulary (-inf logits)."""
    gen = torch.Generator().manual_seed(11)
    b, seq, vocab = 2, 9, 23
    student = (torch.randn(b, seq, vocab, generator=gen) * 3).requires_grad_(True)
    teacher = torch.randn(b, seq, vocab, generator=gen) * 3
    teacher[0, :, 5:9] = -float("inf")
    labels = torch.randint(0, vocab, (b, seq), generator=gen)
    labels[1, 2:5] = -100
    spec = KDLossSpec(temperature=1.0, alpha=alpha, with_metrics=with_metrics, chunk_size=4)
    terms = token_kd_loss_from_logits(student, teacher, labels, spec)
    terms.loss.backward()

    ref_student = student.detach().double().requires_grad_(True)
    s, t, y = ref_student[:, :-1], teacher[:, :-1].double(), labels[:, 1:]
    valid = y != -100
    p = torch.softmax(t[valid], -1)
    log_q = torch.log_softmax(s[valid], -1)
    kl_rows = torch.where(p > 0, p * (p.clamp_min(1e-300).log() - log_q), torch.zeros_like(p)).sum(-1)
    ce = torch.nn.functional.cross_entropy(s[valid], y[valid], reduction="sum")
    ref = alpha * kl_rows.sum() + (1 - alpha) * ce
    ref.backward()
    assert terms.loss.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(student.grad.double(), ref_student.grad, rtol=1e-5, atol=1e-7)
    if with_metrics:
        assert terms.kl_sum.item() == pytest.approx(kl_rows.sum().item(), rel=1e-6)
        assert terms.hard_sum.item() == pytest.approx(ce.item(), rel=1e-6)
