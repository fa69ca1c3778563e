"""Sparse (top-k / sampled) KD losses against float64 formulas written out independently here."""

from __future__ import annotations

import pytest
import torch

from hf_distill.losses import KDLossSpec, LogitSource, causal_targets
from hf_distill.losses.sparse_kd import (
    sampled_signal,
    sparse_kd_loss,
    sparse_kd_loss_from_logits,
    topk_signal,
)

VOCAB = 23


def _logits(seed: int, batch: int = 2, seq: int = 7, vocab: int = VOCAB, scale: float = 2.5):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, seq, vocab, generator=gen) * scale


def _labels(batch: int = 2, seq: int = 7, seed: int = 3):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, VOCAB, (batch, seq), generator=gen)
    labels[0, :2] = -100  # a masked prompt
    labels[-1, 5] = -100
    return labels


def dense_reference(student, teacher, labels, temperature, alpha):
    """Float64 textbook loss: alpha T^2 sum KL(p_T || q_T) + (1 - alpha) sum CE, on causal positions."""
    s, t = student.double(), teacher.double()
    total = s.new_zeros(())
    kl_total = s.new_zeros(())
    for b in range(s.shape[0]):
        for i in range(s.shape[1] - 1):
            y = int(labels[b, i + 1])
            if y == -100:
                continue
            p = torch.softmax(t[b, i] / temperature, -1)
            q = torch.softmax(s[b, i] / temperature, -1)
            kl = (p * (p.log() - q.log())).sum()
            ce = -torch.log_softmax(s[b, i], -1)[y]
            kl_total = kl_total + kl
            total = total + alpha * temperature**2 * kl + (1 - alpha) * ce
    return total, kl_total


def bucket_reference(student, teacher, labels, k, temperature):
    """Float64 KL between (top-k + one tail bucket) coarsenings of teacher and student, summed."""
    s, t = student.double(), teacher.double()
    total = s.new_zeros(())
    for b in range(s.shape[0]):
        for i in range(s.shape[1] - 1):
            if int(labels[b, i + 1]) == -100:
                continue
            p = torch.softmax(t[b, i] / temperature, -1)
            q = torch.softmax(s[b, i] / temperature, -1)
            top = torch.argsort(p, descending=True)[:k]
            rest = torch.ones_like(p, dtype=torch.bool)
            rest[top] = False
            pk, qk = p[top], q[top]
            kl = (pk * (pk.log() - qk.log())).sum()
            r, qr = p[rest].sum(), q[rest].sum()
            if rest.any():
                kl = kl + r * (r.log() - qr.log())
            total = total + kl
    return total


def make_topk(teacher, k, temperature):
    """Top-k columns the way a capture would: float32 log-softmax, k largest, exact tail mass."""
    log_p = torch.log_softmax(teacher.float() / temperature, -1)
    values, ids = log_p.topk(k, -1)
    rest = log_p.scatter(-1, ids, float("-inf")).logsumexp(-1)
    return topk_signal(ids, values, rest.exp(), temperature)


def make_sampled(teacher, num_samples, temperature, gen):
    """Sampled columns: N draws from the teacher, stored as (distinct ids, counts) padded with count 0."""
    probs = torch.softmax(teacher.double() / temperature, -1).reshape(-1, teacher.shape[-1])
    draws = torch.multinomial(probs, num_samples, replacement=True, generator=gen)
    counts = torch.zeros_like(probs).scatter_add_(1, draws, torch.ones_like(draws, dtype=probs.dtype))
    width = int((counts > 0).sum(-1).max())
    top_counts, ids = counts.topk(width, -1)
    entropy = -(probs * probs.log()).sum(-1)
    return sampled_signal(ids, top_counts.to(torch.int32), entropy.float(), temperature), counts / num_samples


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (2.0, 0.7), (0.7, 1.0), (1.0, 0.0)])
@pytest.mark.parametrize("block_rows", [None, 3], ids=["default-blocks", "3-row-blocks"])
def test_topk_with_full_vocabulary_equals_dense_loss_and_gradient(monkeypatch, temperature, alpha, block_rows):
    if block_rows is not None:  # each projected 4-row chunk is worked through in 3-row blocks
        import hf_distill.losses.token_kd as token_kd_module

        monkeypatch.setattr(token_kd_module, "BLOCK_ELEMENTS", block_rows * VOCAB)
    student, teacher, labels = _logits(0), _logits(1), _labels()
    spec = KDLossSpec(temperature=temperature, alpha=alpha, chunk_size=4)
    s = student.clone().requires_grad_(True)
    terms = sparse_kd_loss_from_logits(s, labels, make_topk(teacher, VOCAB, temperature), spec)
    terms.loss.backward()

    s64 = student.double().requires_grad_(True)
    ref, ref_kl = dense_reference(s64, teacher, labels, temperature, alpha)
    ref.backward()
    assert terms.loss.dtype == torch.float32
    torch.testing.assert_close(terms.loss.double(), ref.detach(), rtol=2e-6, atol=1e-5)
    torch.testing.assert_close(terms.kl_sum.double(), ref_kl.detach(), rtol=2e-5, atol=1e-5)
    torch.testing.assert_close(s.grad.double(), s64.grad, rtol=1e-5, atol=1e-6)
    assert int(terms.num_tokens) == int((causal_targets(labels) != -100).sum())


def test_topk_matches_bucket_formula_and_approaches_dense_as_k_grows():
    temperature = 1.5
    student, teacher, labels = _logits(4), _logits(5), _labels()
    spec = KDLossSpec(temperature=temperature, alpha=1.0)
    s64 = student.double().requires_grad_(True)
    dense, dense_kl = dense_reference(s64, teacher, labels, temperature, 1.0)
    dense.backward()
    loss_errors, grad_errors = [], []
    for k in (1, 3, 8, 16, VOCAB):
        s = student.clone().requires_grad_(True)
        terms = sparse_kd_loss_from_logits(s, labels, make_topk(teacher, k, temperature), spec)
        terms.loss.backward()
        bucket = bucket_reference(student, teacher, labels, k, temperature)
        torch.testing.assert_close(terms.kl_sum.double(), bucket, rtol=1e-5, atol=1e-5)
        assert float(terms.kl_sum) <= float(dense_kl.detach()) + 1e-5  # coarsening never increases a KL
        loss_errors.append(abs(float(terms.loss.detach()) - float(dense.detach())))
        grad_errors.append(float((s.grad.double() - s64.grad).norm()))
    assert loss_errors == sorted(loss_errors, reverse=True), loss_errors
    assert grad_errors == sorted(grad_errors, reverse=True), grad_errors
    assert loss_errors[-1] < 1e-4 and grad_errors[-1] < 1e-5


def test_topk_gradient_matches_autograd_of_bucket_formula():
    temperature, k = 1.3, 5
    student, teacher, labels = _logits(6), _logits(7), _labels()
    s64 = student.double().requires_grad_(True)
    bucket_reference(s64, teacher, labels, k, temperature).backward()
    s = student.clone().requires_grad_(True)
    spec = KDLossSpec(temperature=temperature, alpha=1.0, chunk_size=3)
    sparse_kd_loss_from_logits(s, labels, make_topk(teacher, k, temperature), spec).loss.backward()
    torch.testing.assert_close(s.grad.double(), s64.grad * temperature**2, rtol=1e-5, atol=1e-6)


def test_extreme_student_logits_keep_the_tail_bucket_exact():
    """A student tail mass of ~e^-120 underflows float32; the chunk falls back to log space."""
    temperature, k = 1.0, 3
    student, teacher, labels = _logits(19), _logits(20, scale=1.0), _labels()
    top = teacher.topk(k, -1).indices
    student = student.scatter(-1, top, 120.0)  # student puts all its mass on the teacher's top-k
    s64 = student.double().requires_grad_(True)
    reference = bucket_reference(s64, teacher, labels, k, temperature)
    reference.backward()
    s = student.clone().requires_grad_(True)
    terms = sparse_kd_loss_from_logits(s, labels, make_topk(teacher, k, temperature), KDLossSpec(alpha=1.0))
    terms.loss.backward()
    assert float(reference.detach()) > 100  # r * 120-ish per position: the tail term dominates
    torch.testing.assert_close(terms.kl_sum.double(), reference.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(s.grad.double(), s64.grad, rtol=1e-5, atol=1e-6)


def test_sampled_estimator_is_unbiased_for_kl_and_gradient():
    """Mean over R independent sample sets vs the dense KL: within 4 standard errors (fixed seed); the
    gradient's squared error within 3x its expected value under unbiasedness."""
    temperature, num_samples, repeats = 1.0, 16, 400
    student, teacher = _logits(8, batch=1, seq=4), _logits(9, batch=1, seq=4, scale=1.5)
    labels = torch.ones(1, 4, dtype=torch.long)
    s64 = student.double().requires_grad_(True)
    dense, dense_kl = dense_reference(s64, teacher, labels, temperature, 1.0)
    dense.backward()
    spec = KDLossSpec(temperature=temperature, alpha=1.0)
    gen = torch.Generator().manual_seed(1234)
    kls, grads = [], []
    for _ in range(repeats):
        signal, _ = make_sampled(teacher, num_samples, temperature, gen)
        s = student.clone().requires_grad_(True)
        terms = sparse_kd_loss_from_logits(s, labels, signal, spec)
        terms.loss.backward()
        kls.append(float(terms.kl_sum))
        grads.append(s.grad.double())
    kls_t = torch.tensor(kls, dtype=torch.float64)
    stderr = kls_t.std() / repeats**0.5
    assert abs(float(kls_t.mean()) - float(dense_kl.detach())) < 4 * float(stderr), (kls_t.mean(), dense_kl, stderr)
    g = torch.stack(grads)
    # Unbiased => E||mean - truth||^2 = trace(Cov) / R; allow 3x (a chi-square-like quantity).
    squared_error = float((g.mean(0) - s64.grad).square().sum())
    expected = float(g.var(0).sum()) / repeats
    assert squared_error < 3 * expected, (squared_error, expected)
    # A single draw is genuinely noisy, so the test above could fail for a biased estimator.
    assert float(kls_t.std()) > 10 * float(stderr)


def test_sampled_loss_and_gradient_approach_dense_as_samples_grow():
    temperature = 2.0
    student, teacher, labels = _logits(10), _logits(11), _labels()
    s64 = student.double().requires_grad_(True)
    dense, _ = dense_reference(s64, teacher, labels, temperature, 0.5)
    dense.backward()
    spec = KDLossSpec(temperature=temperature, alpha=0.5, chunk_size=5)
    gen = torch.Generator().manual_seed(0)
    loss_err, grad_err = [], []
    for n in (4, 64, 1024, 16384):
        errs, gerrs = [], []
        for _ in range(8):
            signal, _ = make_sampled(teacher, n, temperature, gen)
            s = student.clone().requires_grad_(True)
            terms = sparse_kd_loss_from_logits(s, labels, signal, spec)
            terms.loss.backward()
            errs.append(abs(float(terms.loss.detach()) - float(dense.detach())))
            gerrs.append(float((s.grad.double() - s64.grad).norm()))
        loss_err.append(sum(errs) / len(errs))
        grad_err.append(sum(gerrs) / len(gerrs))
    assert loss_err == sorted(loss_err, reverse=True), loss_err
    assert grad_err == sorted(grad_err, reverse=True), grad_err
    assert grad_err[-1] < grad_err[0] / 20


def test_sampled_gradient_is_exact_for_its_own_estimate():
    """Gradient of -sum w log q_T (float64 autograd) for a fixed sample set matches the closed form."""
    temperature = 1.7
    student, teacher, labels = _logits(12), _logits(13), _labels()
    signal, weights = make_sampled(teacher, 32, temperature, torch.Generator().manual_seed(5))
    s64 = student.double().requires_grad_(True)
    log_q = torch.log_softmax(s64 / temperature, -1).reshape(-1, VOCAB)
    log_q1 = torch.log_softmax(s64, -1).reshape(-1, VOCAB)
    targets = causal_targets(labels)
    valid = targets != -100
    ce = -(weights[valid] * log_q[valid]).sum()
    hard = -log_q1[valid].gather(1, targets[valid].unsqueeze(1)).sum()
    (0.3 * temperature**2 * ce + 0.7 * hard).backward()
    s = student.clone().requires_grad_(True)
    spec = KDLossSpec(temperature=temperature, alpha=0.3, chunk_size=4)
    terms = sparse_kd_loss_from_logits(s, labels, signal, spec)
    terms.loss.backward()
    torch.testing.assert_close(s.grad.double(), s64.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms.hard_sum.double(), hard.detach(), rtol=1e-6, atol=1e-5)


def test_fused_head_form_matches_logits_form():
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(2 * 7, 6, generator=gen)
    weight = torch.randn(VOCAB, 6, generator=gen)
    teacher, labels, temperature = _logits(14), _labels(), 1.0
    signal = make_topk(teacher, 6, temperature)
    spec = KDLossSpec(temperature=temperature, alpha=0.5, chunk_size=3)
    h1, w1 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    fused = sparse_kd_loss(LogitSource(h1, w1), signal, causal_targets(labels), spec)
    fused.loss.backward()
    h2, w2 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    plain = sparse_kd_loss(LogitSource(h2 @ w2.t()), signal, causal_targets(labels), spec)
    plain.loss.backward()
    torch.testing.assert_close(fused.loss, plain.loss)
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-5, atol=1e-6)


def test_top1_agreement_counts_student_argmax_equal_teacher_top_token():
    student, teacher, labels = _logits(15), _logits(16), _labels()
    student[0, 2] = teacher[0, 2]  # force at least one agreement
    terms = sparse_kd_loss_from_logits(student, labels, make_topk(teacher, 4, 1.0), KDLossSpec(alpha=1.0))
    valid = causal_targets(labels) != -100
    expected = (student.reshape(-1, VOCAB).argmax(-1) == teacher.reshape(-1, VOCAB).argmax(-1))[valid].sum()
    assert int(terms.top1_agree) == int(expected) >= 1


def test_bad_signals_raise_clear_errors():
    student, teacher, labels = _logits(17), _logits(18), _labels()
    good = make_topk(teacher, 4, 1.0)
    with pytest.raises(ValueError, match="captured at temperature 1.0"):
        sparse_kd_loss_from_logits(student, labels, good, KDLossSpec(temperature=2.0))
    with pytest.raises(ValueError, match="forward_kl.? only"):
        sparse_kd_loss_from_logits(student, labels, good, KDLossSpec(divergence="reverse_kl"))
    nan = make_topk(teacher, 4, 1.0)
    nan.weights[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        sparse_kd_loss_from_logits(student, labels, nan, KDLossSpec())
    with pytest.raises(ValueError, match="shared vocabulary"):
        sparse_kd_loss_from_logits(student, labels, good, KDLossSpec(), teacher_vocab_size=VOCAB - 10)
    with pytest.raises(ValueError, match="same number of token positions"):
        sparse_kd_loss_from_logits(student[:, :-1], labels[:, :-1], good, KDLossSpec())
    full = make_topk(teacher, VOCAB, 1.0)
    full.tail_mass[4] = 0.1
    with pytest.raises(ValueError, match="cover the whole vocabulary"):
        sparse_kd_loss_from_logits(student, labels, full, KDLossSpec())
    with pytest.raises(ValueError, match="disagree in shape"):
        topk_signal(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 5), torch.zeros(3), 1.0)
