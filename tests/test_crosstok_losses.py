"""Cross-vocabulary losses against a plain float64 autograd implementation written from the definitions."""

from __future__ import annotations

import pytest
import torch

from hf_distill.crosstok import AlignedExample, AlignedGroup, build_alignment
from hf_distill.losses import LogitSource
from hf_distill.losses.cross_vocab import CrossVocabLossSpec, cross_vocab_loss


def _reference(student_logits, teacher_logits, groups, temperature, top_k, uld_w, exact_w, pairs):
    """Textbook version: per group, chain probabilities, merged vectors, sorted L1, KL over the shared
    tokens renormalised. float64.

    ``groups`` is a list of (student_rows, student_tokens, teacher_rows, teacher_tokens): the rows whose
    logits predict each token of the group, in order.
    """
    s_all = (student_logits.double() / temperature).log_softmax(-1)
    t_all = (teacher_logits.double() / temperature).log_softmax(-1)
    total_uld = torch.zeros((), dtype=torch.float64)
    total_exact = torch.zeros((), dtype=torch.float64)
    for s_rows, s_toks, t_rows, t_toks in groups:
        vectors = []
        for log_p, rows, toks in ((s_all, s_rows, s_toks), (t_all, t_rows, t_toks)):
            group_log_prob = sum(log_p[r, tok] for r, tok in zip(rows, toks))
            probs = log_p[rows[0]].exp()
            one_hot = torch.zeros_like(probs)
            one_hot[toks[0]] = 1.0
            merged = probs * (1 - one_hot) + one_hot * group_log_prob.exp()
            ranked = torch.sort(merged, descending=True).values
            if top_k is not None:
                ranked = ranked[:top_k]
            vectors.append(ranked)
        width = max(v.numel() for v in vectors)
        padded = [torch.cat([v, v.new_zeros(width - v.numel())]) for v in vectors]
        total_uld = total_uld + (padded[0] - padded[1]).abs().sum()
        if pairs is not None:
            s_ids, t_ids = pairs
            p_s = s_all[s_rows[0]].exp()[s_ids]
            p_t = t_all[t_rows[0]].exp()[t_ids]
            p_s, p_t = p_s / p_s.sum(), p_t / p_t.sum()
            total_exact = total_exact + (p_t * (p_t.log() - p_s.log())).sum()
    return temperature**2 * (uld_w * total_uld + exact_w * total_exact)


def _setup(vs, vt, seed=0):
    """Two sequences per side with hand-made groups of 1..3 tokens, and the same groups as row lists."""
    gen = torch.Generator().manual_seed(seed)
    length_s, length_t = 7, 6
    student_ids = [torch.randint(0, vs, (length_s,), generator=gen).tolist() for _ in range(2)]
    teacher_ids = [torch.randint(0, vt, (length_t,), generator=gen).tolist() for _ in range(2)]
    # (student token range, teacher token range) per group; characters are irrelevant for the loss.
    layouts = [
        [((1, 2), (1, 3)), ((2, 5), (3, 4)), ((5, 7), (4, 6))],
        [((2, 3), (1, 2)), ((3, 4), (2, 3)), ((4, 7), (3, 5))],
    ]
    examples, ref_groups = [], []
    for b, layout in enumerate(layouts):
        groups = [AlignedGroup(s0, s1, t0, t1, 0, 1) for (s0, s1), (t0, t1) in layout]
        examples.append(AlignedExample(student_ids[b], teacher_ids[b], groups))
        for (s0, s1), (t0, t1) in layout:
            ref_groups.append(
                (
                    [b * length_s + i - 1 for i in range(s0, s1)],
                    [student_ids[b][i] for i in range(s0, s1)],
                    [b * length_t + i - 1 for i in range(t0, t1)],
                    [teacher_ids[b][i] for i in range(t0, t1)],
                )
            )
    alignment = build_alignment(examples, length_s, length_t)
    student_logits = (3 * torch.randn(2 * length_s, vs, generator=gen)).requires_grad_(True)
    teacher_logits = 3 * torch.randn(2 * length_t, vt, generator=gen)
    return student_logits, teacher_logits, alignment, ref_groups


PAIRS = (torch.tensor([0, 3, 4, 7]), torch.tensor([5, 1, 4, 0]))


@pytest.mark.parametrize(
    ("vs", "vt", "temperature", "top_k", "exact_w", "chunk_size"),
    [
        (12, 20, 1.0, None, 0.0, None),
        (20, 12, 2.0, None, 0.5, 2),
        (12, 20, 0.7, 5, 1.0, 1),
        (12, 20, 1.5, 15, 0.0, 3),
        (20, 12, 1.0, 15, 0.5, None),
        (16, 16, 1.0, None, 0.0, 4),
    ],
)
def test_matches_float64_reference_value_and_gradient(vs, vt, temperature, top_k, exact_w, chunk_size):
    student_logits, teacher_logits, alignment, ref_groups = _setup(vs, vt)
    spec = CrossVocabLossSpec(
        temperature=temperature, uld_weight=1.0, exact_weight=exact_w, top_k=top_k, chunk_size=chunk_size
    )
    pairs = PAIRS if exact_w > 0 else None
    terms = cross_vocab_loss(student_logits, teacher_logits, alignment, spec, shared_pairs=pairs)
    terms.loss.backward()

    ref_student = student_logits.detach().double().requires_grad_(True)
    expected = _reference(ref_student, teacher_logits, ref_groups, temperature, top_k, 1.0, exact_w, pairs)
    expected.backward()
    assert terms.num_groups == len(ref_groups) == 6
    torch.testing.assert_close(terms.loss.double(), expected.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(student_logits.grad.double(), ref_student.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [2, None])
def test_fused_student_head_matches_float64_reference_for_hidden_weight_and_bias(chunk_size):
    """Student as hidden states + lm_head: only the rows the loss reads are projected; every gradient exact."""
    _, teacher_logits, alignment, ref_groups = _setup(12, 20)
    gen = torch.Generator().manual_seed(5)
    h = torch.randn(14, 6, generator=gen, requires_grad=True)
    w = (torch.randn(12, 6, generator=gen) * 1.5).requires_grad_(True)
    b = torch.randn(12, generator=gen, requires_grad=True)
    spec = CrossVocabLossSpec(temperature=1.5, uld_weight=1.0, exact_weight=0.5, chunk_size=chunk_size)
    terms = cross_vocab_loss(LogitSource(h, w, b), teacher_logits, alignment, spec, shared_pairs=PAIRS)
    terms.loss.backward()

    h64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (h, w, b))
    logits64 = h64 @ w64.t() + b64
    expected = _reference(logits64, teacher_logits, ref_groups, 1.5, None, 1.0, 0.5, PAIRS)
    expected.backward()
    torch.testing.assert_close(terms.loss.double(), expected.detach(), rtol=1e-5, atol=1e-6)
    for got, want in ((h.grad, h64.grad), (w.grad, w64.grad), (b.grad, b64.grad)):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)
    first_rows = torch.tensor([rows[0] for rows, _, _, _ in ref_groups])
    assert terms.student_top1.tolist() == logits64.detach()[first_rows].argmax(-1).tolist()


def test_bf16_student_logits_get_a_bf16_gradient_close_to_the_float64_one():
    """The gradient buffer lives in the logits' dtype (no float32 (tokens x vocab) copy): check it stays accurate."""
    student_logits, teacher_logits, alignment, ref_groups = _setup(12, 20)
    spec = CrossVocabLossSpec(temperature=2.0, uld_weight=1.0, exact_weight=0.5, chunk_size=2)
    student = student_logits.detach().bfloat16().requires_grad_(True)
    terms = cross_vocab_loss(student, teacher_logits, alignment, spec, shared_pairs=PAIRS)
    terms.loss.backward()

    ref_student = student.detach().double().requires_grad_(True)
    expected = _reference(ref_student, teacher_logits, ref_groups, 2.0, None, 1.0, 0.5, PAIRS)
    expected.backward()
    assert student.grad.dtype == torch.bfloat16
    torch.testing.assert_close(terms.loss.double(), expected.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(student.grad.double(), ref_student.grad, rtol=2e-2, atol=2e-3)


def test_zero_for_identical_distributions_over_identical_vocabularies():
    gen = torch.Generator().manual_seed(3)
    vocab, length = 16, 8
    ids = torch.randint(0, vocab, (length,), generator=gen).tolist()
    groups = [AlignedGroup(i, i + 1, i, i + 1, i, i + 1) for i in range(1, length)]
    groups[2:4] = [AlignedGroup(3, 5, 3, 5, 3, 5)]  # a two-token group on both sides
    alignment = build_alignment([AlignedExample(ids, ids, groups)], length, length)
    logits = torch.randn(length, vocab, generator=gen)
    identity = torch.arange(vocab)
    spec = CrossVocabLossSpec(temperature=2.0, uld_weight=1.0, exact_weight=1.0)
    student = logits.clone().requires_grad_(True)
    terms = cross_vocab_loss(student, logits, alignment, spec, shared_pairs=(identity, identity))
    terms.loss.backward()
    assert terms.loss.item() == pytest.approx(0.0, abs=1e-6)
    assert student.grad.abs().max().item() < 1e-6
    different = cross_vocab_loss(logits.roll(1, dims=1), logits, alignment, spec, shared_pairs=(identity, identity))
    assert different.loss.item() > 1e-2


def test_gradient_flows_only_to_the_student_and_descent_reduces_the_loss():
    student_logits, teacher_logits, alignment, _ = _setup(10, 30, seed=4)
    teacher_logits.requires_grad_(True)
    spec = CrossVocabLossSpec(temperature=1.0, exact_weight=0.5)
    terms = cross_vocab_loss(student_logits, teacher_logits, alignment, spec, shared_pairs=PAIRS)
    terms.loss.backward()
    assert teacher_logits.grad is None
    assert torch.isfinite(student_logits.grad).all() and student_logits.grad.abs().sum() > 0
    stepped = (student_logits - 0.5 * student_logits.grad).detach()
    after = cross_vocab_loss(stepped, teacher_logits.detach(), alignment, spec, shared_pairs=PAIRS)
    assert after.loss.item() < terms.loss.item()


def test_exact_term_stays_finite_when_the_student_puts_almost_no_mass_outside_shared_tokens():
    student_logits, teacher_logits, alignment, _ = _setup(12, 20, seed=5)
    confident = student_logits.detach().clone()
    confident[:, PAIRS[0]] += 60.0  # unshared student tokens get ~1e-26 of the mass
    confident.requires_grad_(True)
    terms = cross_vocab_loss(
        confident, teacher_logits, alignment, CrossVocabLossSpec(exact_weight=1.0), shared_pairs=PAIRS
    )
    terms.loss.backward()
    assert torch.isfinite(terms.loss) and torch.isfinite(confident.grad).all()


def test_bad_inputs_raise_clear_errors():
    student_logits, teacher_logits, alignment, _ = _setup(12, 20)
    with pytest.raises(ValueError, match="shared_pairs"):
        cross_vocab_loss(student_logits, teacher_logits, alignment, CrossVocabLossSpec(exact_weight=1.0))
    with pytest.raises(ValueError, match="outside"):
        cross_vocab_loss(student_logits[:5], teacher_logits, alignment, CrossVocabLossSpec())
    with pytest.raises(ValueError, match="vocabulary sizes"):
        cross_vocab_loss(
            student_logits,
            teacher_logits,
            alignment,
            CrossVocabLossSpec(exact_weight=1.0),
            shared_pairs=(torch.tensor([0]), torch.tensor([25])),
        )
    nan_teacher = teacher_logits.clone()
    nan_teacher[int(alignment.teacher_row[0])] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        cross_vocab_loss(student_logits, nan_teacher, alignment, CrossVocabLossSpec())
    with pytest.raises(ValueError, match="temperature"):
        CrossVocabLossSpec(temperature=0.0)
    with pytest.raises(ValueError, match="top_k"):
        CrossVocabLossSpec(top_k=0)
