"""The pure co-trained losses (chunked, fused lm_head form) against float64 autograd: values and gradients, the
detached side receiving none, and chunk sizes that split rows unevenly."""

from __future__ import annotations

import pytest
import torch

from hf_distill import KDLossSpec, LogitSource, MTPLossSpec, mtp_depth_terms, peer_kd_terms

TOKENS, HIDDEN, VOCAB = 11, 8, 13


def _fused(seed: int, grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(TOKENS, HIDDEN, generator=generator).requires_grad_(grad)
    weight = (2 * torch.randn(VOCAB, HIDDEN, generator=generator)).requires_grad_(grad)
    return states, weight


def _targets() -> torch.Tensor:
    targets = torch.randint(0, VOCAB, (TOKENS,), generator=torch.Generator().manual_seed(9))
    targets[[2, 7]] = -100
    return targets


def _kl_rows(teacher_logits, student_logits, temperature):
    log_p = torch.log_softmax(teacher_logits / temperature, -1)
    log_q = torch.log_softmax(student_logits / temperature, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _ce_rows(logits, targets):
    return -torch.log_softmax(logits, -1).gather(1, targets.unsqueeze(1)).squeeze(1)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_mtp_depth_terms_match_float64_autograd(chunk_size):
    spec = MTPLossSpec(chunk_size=chunk_size)
    (aux_s, aux_w), (main_s, main_w) = _fused(0), _fused(1)
    targets = _targets()
    terms = mtp_depth_terms(LogitSource(aux_s, aux_w), LogitSource(main_s, main_w), targets, spec)
    terms.loss.backward()

    s64, w64 = aux_s.detach().double().requires_grad_(), aux_w.detach().double().requires_grad_()
    ok = targets != -100
    aux, main = (s64 @ w64.T)[ok], (main_s.detach().double() @ main_w.detach().double().T)[ok]
    expected = 0.3 * _ce_rows(aux, targets[ok]).sum() + 0.1 * 4.0 * _kl_rows(main, aux, 2.0).sum()
    expected.backward()
    assert terms.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(aux_s.grad.double(), s64.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(aux_w.grad.double(), w64.grad, rtol=1e-4, atol=1e-6)
    assert main_s.grad is None and main_w.grad is None  # the main head never learns from its auxiliaries
    assert int(terms.num_tokens) == int(ok.sum())


@pytest.mark.parametrize("others", [0, 1, 3])
def test_peer_kd_terms_match_float64_autograd(others):
    spec = KDLossSpec(temperature=1.5, alpha=0.3, chunk_size=4)
    own_s, own_w = _fused(0)
    peers = [_fused(seed) for seed in range(1, others + 1)]
    targets = _targets()
    terms = peer_kd_terms(LogitSource(own_s, own_w), [LogitSource(s, w) for s, w in peers], targets, spec)
    terms.loss.backward()

    s64, w64 = own_s.detach().double().requires_grad_(), own_w.detach().double().requires_grad_()
    ok = targets != -100
    own = (s64 @ w64.T)[ok]
    ce = _ce_rows(own, targets[ok]).sum()
    if others:
        kls = [_kl_rows((s.detach().double() @ w.detach().double().T)[ok], own, 1.5).sum() for s, w in peers]
        expected = 0.7 * ce + 0.3 * 1.5**2 * sum(kls) / others
    else:
        expected = ce
    expected.backward()
    assert terms.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms.hard_sum.item() == pytest.approx(ce.item(), rel=1e-5)
    torch.testing.assert_close(own_s.grad.double(), s64.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(own_w.grad.double(), w64.grad, rtol=1e-4, atol=1e-6)
    assert all(s.grad is None and w.grad is None for s, w in peers)


def test_mtp_spec_refuses_weights_that_train_nothing():
    with pytest.raises(ValueError, match="both 0"):
        MTPLossSpec(ce_weight=0.0, kd_weight=0.0)
    with pytest.raises(ValueError, match="mtp_kd_weight"):
        MTPLossSpec(kd_weight=float("nan"))
