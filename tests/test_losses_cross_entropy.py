"""Chunked cross-entropy against torch's float64 cross-entropy, for logits and for the fused lm_head form."""

from __future__ import annotations

import pytest
import torch

import hf_distill.losses.token_kd as token_kd_module
from hf_distill.losses import LogitSource, cross_entropy_sum


def _targets(tokens: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    targets = torch.randint(0, vocab, (tokens,), generator=gen)
    targets[[0, 3, 4]] = -100
    return targets


@pytest.mark.parametrize("chunk_size", [2, None])
@pytest.mark.parametrize("block_rows", [None, 3])
def test_logits_form_matches_float64_reference(monkeypatch, chunk_size, block_rows):
    if block_rows is not None:
        monkeypatch.setattr(token_kd_module, "BLOCK_ELEMENTS", block_rows * 19)
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(11, 19, generator=gen) * 3).requires_grad_(True)
    targets = _targets(11, 19, gen)

    total = cross_entropy_sum(LogitSource(logits), targets, chunk_size=chunk_size)
    total.backward()

    ref_logits = logits.detach().double().requires_grad_(True)
    valid = targets != -100
    ref = torch.nn.functional.cross_entropy(ref_logits[valid], targets[valid], reduction="sum")
    ref.backward()
    assert total.dtype == torch.float32
    assert total.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(logits.grad.double(), ref_logits.grad, rtol=1e-5, atol=1e-7)


def test_fused_form_matches_float64_reference_including_weight_and_bias_gradients():
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(9, 5, generator=gen, requires_grad=True)
    w = torch.randn(23, 5, generator=gen, requires_grad=True)
    b = torch.randn(23, generator=gen, requires_grad=True)
    targets = _targets(9, 23, gen)

    total = cross_entropy_sum(LogitSource(h, w, b), targets, chunk_size=4)
    (2.5 * total).backward()

    h64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (h, w, b))
    valid = targets != -100
    ref = 2.5 * torch.nn.functional.cross_entropy((h64 @ w64.t() + b64)[valid], targets[valid], reduction="sum")
    ref.backward()
    assert total.item() * 2.5 == pytest.approx(ref.item(), rel=1e-6)
    for got, want in ((h.grad, h64.grad), (w.grad, w64.grad), (b.grad, b64.grad)):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_bf16_logits_are_evaluated_in_float32_and_get_a_bf16_gradient():
    gen = torch.Generator().manual_seed(2)
    logits = (torch.randn(6, 13, generator=gen) * 2).bfloat16().requires_grad_(True)
    targets = torch.randint(0, 13, (6,), generator=gen)
    total = cross_entropy_sum(LogitSource(logits), targets)
    total.backward()
    ref = torch.nn.functional.cross_entropy(logits.detach().double(), targets, reduction="sum")
    assert total.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16
    assert total.item() == pytest.approx(ref.item(), rel=1e-6)


def test_all_masked_gives_zero_and_a_zero_gradient():
    logits = torch.randn(4, 7, requires_grad=True)
    total = cross_entropy_sum(LogitSource(logits), torch.full((4,), -100))
    total.backward()
    assert total.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_bad_inputs_are_errors():
    logits = torch.randn(4, 7)
    with pytest.raises(ValueError, match="vocabulary size 7"):
        cross_entropy_sum(LogitSource(logits), torch.tensor([0, 7, -100, 1]))
    with pytest.raises(ValueError, match="must match"):
        cross_entropy_sum(LogitSource(logits), torch.tensor([0, 1]))
    logits[1, 2] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        cross_entropy_sum(LogitSource(logits), torch.tensor([0, 1, 2, 3]))
