"""The chunked losses' precision policy against float64 references (see hf_distill/losses/precision.py).

Three runs: float32 weights, float32 weights under bf16 autocast (what `bf16=True` does), and bf16 weights. The
reference is float64 autograd on the values the run holds (the bf16 values themselves for bf16 weights). The
tolerances are the ones the docs state: relative error of the loss sum, and norm-wise relative error
||g - g64|| / ||g64|| of the hidden-state and `lm_head` weight gradients.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from hf_distill.losses import KDLossSpec, LogitSource, cross_entropy_sum, token_kd_loss
from hf_distill.losses.sparse_kd import sparse_kd_loss, topk_signal

TOKENS, HIDDEN, VOCAB = 64, 48, 1500
ALPHA, TEMPERATURE = 0.5, 2.0
# (run, precision) -> (loss tolerance, gradient tolerance). bf16 products round each logit and each gradient
# entry to 8 significant bits (about 0.4%); the measured errors are about 5x below these bounds.
TOLERANCES = {
    ("float32", "auto"): (1e-6, 1e-5),
    ("float32", "float32"): (1e-6, 1e-5),
    ("bf16-autocast", "auto"): (1e-3, 2e-2),
    ("bf16-autocast", "float32"): (1e-6, 1e-5),
    ("bf16-weights", "auto"): (1e-3, 2e-2),
    # The products are float32, but the gradients come back in the parameters' dtype, bf16.
    ("bf16-weights", "float32"): (1e-6, 4e-3),
}
LOSSES = ("dense-hidden-teacher", "dense-logit-teacher", "cross-entropy", "sparse-topk")


def _inputs(run: str):
    gen = torch.Generator().manual_seed(0)
    h_s, h_t = torch.randn(TOKENS, HIDDEN, generator=gen), torch.randn(TOKENS, HIDDEN, generator=gen)
    w_s, w_t = torch.randn(VOCAB, HIDDEN, generator=gen) * 0.5, torch.randn(VOCAB, HIDDEN, generator=gen) * 0.5
    targets = torch.randint(0, VOCAB, (TOKENS,), generator=gen)
    targets[::7] = -100
    dtype = torch.bfloat16 if run == "bf16-weights" else torch.float32
    return (h_s.to(dtype), w_s.to(dtype), h_t.to(dtype), w_t.to(dtype)), targets


def _autocast(run: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if run == "bf16-autocast" else contextlib.nullcontext()


def _reference(loss: str, h_s, w_s, h_t, w_t, targets):
    """float64 loss and gradients (hidden states, weight) by textbook formulas and autograd."""
    h, w = (t.detach().double().requires_grad_(True) for t in (h_s, w_s))
    valid = targets != -100
    student = (h @ w.t())[valid]
    teacher = (h_t.double() @ w_t.double().t())[valid]
    cross_entropy = F.cross_entropy(student, targets[valid], reduction="sum")
    if loss == "cross-entropy":
        value = cross_entropy
    else:
        temperature = 1.0 if loss == "sparse-topk" else TEMPERATURE  # a captured signal has its own temperature
        log_p, log_q = (teacher / temperature).log_softmax(-1), (student / temperature).log_softmax(-1)
        kl = (log_p.exp() * (log_p - log_q)).sum()
        value = ALPHA * temperature**2 * kl + (1 - ALPHA) * cross_entropy
    value.backward()
    return value.item(), h.grad, w.grad


def _ours(loss: str, precision: str, h_s, w_s, h_t, w_t, targets):
    student = LogitSource(h_s, w_s)
    if loss == "cross-entropy":
        return cross_entropy_sum(student, targets, chunk_size=16, precision=precision)
    if loss == "sparse-topk":  # k = vocabulary size: the exact forward KL, teacher captured in float32
        with torch.autocast("cpu", enabled=False):  # captured offline, outside the run's autocast
            log_p = (h_t.float() @ w_t.float().t()).log_softmax(-1)
        signal = topk_signal(torch.arange(VOCAB).expand(TOKENS, VOCAB), log_p, torch.zeros(TOKENS), 1.0)
        spec = KDLossSpec(alpha=ALPHA, temperature=1.0, chunk_size=16, precision=precision)
        return sparse_kd_loss(student, signal, targets, spec).loss
    spec = KDLossSpec(alpha=ALPHA, temperature=TEMPERATURE, chunk_size=16, precision=precision)
    if loss == "dense-hidden-teacher":
        teacher = LogitSource(h_t, w_t)
    else:  # float32 teacher logits (as precomputed or from a float32 teacher)
        teacher = LogitSource((h_t.double() @ w_t.double().t()).float())
    return token_kd_loss(student, teacher, targets, spec).loss


def _norm_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).norm() / want.norm())


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("precision", ["auto", "float32"])
@pytest.mark.parametrize("run", ["float32", "bf16-autocast", "bf16-weights"])
def test_loss_and_gradients_are_within_the_documented_tolerance_of_float64(run, precision, loss):
    (h_s, w_s, h_t, w_t), targets = _inputs(run)
    want, want_h, want_w = _reference(loss, h_s, w_s, h_t, w_t, targets)
    h, w = h_s.clone().requires_grad_(True), w_s.clone().requires_grad_(True)
    with _autocast(run):
        value = _ours(loss, precision, h, w, h_t, w_t, targets)
    value.backward()

    loss_tol, grad_tol = TOLERANCES[(run, precision)]
    assert value.dtype == torch.float32
    assert abs(value.item() - want) <= loss_tol * abs(want)
    assert h.grad.dtype == h_s.dtype and w.grad.dtype == w_s.dtype
    assert _norm_error(h.grad, want_h) <= grad_tol
    assert _norm_error(w.grad, want_w) <= grad_tol


def test_default_runs_the_projection_in_the_autocast_dtype():
    """Under bf16 autocast the default's logits are bf16 products (upcast before the softmax): its loss equals the
    float64 loss of bf16-rounded logits, and differs from the loss of float32 logits by more than float32 noise."""
    (h_s, w_s, _, _), targets = _inputs("float32")
    with _autocast("bf16-autocast"):
        ours = cross_entropy_sum(LogitSource(h_s, w_s), targets, chunk_size=16).item()
    valid = targets != -100
    bf16_logits = (h_s.bfloat16()[valid].double() @ w_s.bfloat16().double().t()).bfloat16().double()
    float32_logits = h_s[valid].double() @ w_s.double().t()
    want_bf16 = F.cross_entropy(bf16_logits, targets[valid], reduction="sum").item()
    want_float32 = F.cross_entropy(float32_logits, targets[valid], reduction="sum").item()
    assert ours == pytest.approx(want_bf16, rel=1e-6)
    assert abs(ours - want_float32) > 1e-5 * abs(want_float32)


def test_bf16_weights_get_their_weight_gradient_without_a_float32_buffer_in_auto_mode():
    (h_s, w_s, h_t, w_t), targets = _inputs("bf16-weights")
    h, w = h_s.clone().requires_grad_(True), w_s.clone().requires_grad_(True)
    _ours("dense-hidden-teacher", "auto", h, w, h_t, w_t, targets).backward()
    assert w.grad.dtype == torch.bfloat16 and h.grad.dtype == torch.bfloat16


def test_unknown_precision_is_a_named_error():
    with pytest.raises(ValueError, match="loss precision must be one of auto, float32"):
        KDLossSpec(precision="bf16")
    with pytest.raises(ValueError, match="loss precision"):
        source = LogitSource(torch.randn(3, 4), torch.randn(5, 4))
        cross_entropy_sum(source, torch.zeros(3, dtype=torch.long), precision="x")


def test_kd_config_passes_loss_precision_to_both_loss_specs(tmp_path):
    from hf_distill import KDConfig

    config = KDConfig(output_dir=str(tmp_path), loss_precision="float32", use_cpu=True, report_to=[])
    assert config.loss_spec().precision == "float32"
    assert config.cross_vocab_spec().precision == "float32"
    assert KDConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[]).loss_spec().precision == "auto"
    with pytest.raises(ValueError, match="loss precision"):
        KDConfig(output_dir=str(tmp_path), loss_precision="fp8", use_cpu=True, report_to=[])
