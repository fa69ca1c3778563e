"""Teacher ensembles: the chunked mixture against float64 references of the mixed distribution (value and
gradients), and the trainer with one and two teachers."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import kd_args, make_text_dataset, make_tiny_llama, make_word_tokenizer

from hf_distill import KDTrainer
from hf_distill.losses.teacher_mixture import TeacherMixture
from hf_distill.losses.token_kd import IGNORE_INDEX, KDLossSpec, LogitSource, token_kd_loss


def reference_mixture_loss(student_logits, teacher_logits, weights, combine, targets, temperature, alpha):
    """Sum over valid rows of alpha*T^2*KL(p_mix || q_T) + (1-alpha)*CE, in float64, written from the definitions."""
    valid = targets != IGNORE_INDEX
    s = student_logits[valid].double()
    w = torch.tensor(weights, dtype=torch.float64)
    w = w / w.sum()
    log_ps = [torch.log_softmax(t[valid].double() / temperature, -1) for t in teacher_logits]
    if combine == "probability":
        p = sum(wi * lp.exp() for wi, lp in zip(w, log_ps))
    else:
        p = torch.softmax(sum(wi * lp for wi, lp in zip(w, log_ps)), -1)
    log_q = torch.log_softmax(s / temperature, -1)
    kl = (p * (p.log() - log_q)).sum(-1)
    ce = -torch.log_softmax(s, -1).gather(1, targets[valid].unsqueeze(1)).squeeze(1)
    return (alpha * temperature**2 * kl + (1 - alpha) * ce).sum()


@pytest.mark.parametrize("combine", ["probability", "log_probability"])
def test_chunked_mixture_equals_the_float64_mixed_distribution(combine):
    torch.manual_seed(0)
    tokens, hidden, vocab = 23, 16, 50
    s_hidden = torch.randn(tokens, hidden, requires_grad=True)
    s_weight = (torch.randn(vocab, hidden) * 0.5).requires_grad_(True)
    t1_hidden, t1_weight = torch.randn(tokens, 12), torch.randn(vocab, 12) * 0.7
    t2_logits = torch.randn(tokens, vocab) * 3
    targets = torch.randint(0, vocab, (tokens,))
    targets[[0, 5, 6, 17]] = IGNORE_INDEX
    weights, temperature, alpha = (0.7, 0.3), 2.0, 0.6

    mixture = TeacherMixture([LogitSource(t1_hidden, t1_weight), LogitSource(t2_logits)], weights, combine)
    spec = KDLossSpec(temperature=temperature, alpha=alpha, chunk_size=5)  # several chunks
    terms = token_kd_loss(LogitSource(s_hidden, s_weight), mixture, targets, spec)
    terms.loss.backward()

    s64, w64 = s_hidden.detach().double().requires_grad_(True), s_weight.detach().double().requires_grad_(True)
    teachers = [t1_hidden.double() @ t1_weight.double().t(), t2_logits.double()]
    expected = reference_mixture_loss(s64 @ w64.t(), teachers, weights, combine, targets, temperature, alpha)
    expected.backward()
    assert terms.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(s_hidden.grad.double(), s64.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(s_weight.grad.double(), w64.grad, rtol=1e-4, atol=1e-6)


def test_mixture_refuses_bad_weights_and_mismatched_teachers():
    a, b = LogitSource(torch.randn(4, 8)), LogitSource(torch.randn(4, 8))
    with pytest.raises(ValueError, match="finite and > 0"):
        TeacherMixture([a, b], (1.0, 0.0))
    with pytest.raises(ValueError, match="finite and > 0"):
        TeacherMixture([a, b], (1.0, math.nan))
    with pytest.raises(ValueError, match="same token positions"):
        TeacherMixture([a, LogitSource(torch.randn(5, 8))], (1.0, 1.0))
    with pytest.raises(ValueError, match="combine"):
        TeacherMixture([a, b], (1.0, 1.0), combine="median")


def _trainer(tmp_path, teacher, **overrides):
    return KDTrainer(
        model=make_tiny_llama(seed=0),
        teacher_model=teacher,
        args=kd_args(tmp_path, temperature=2.0, alpha=0.5, **overrides),
        train_dataset=make_text_dataset(),
        processing_class=make_word_tokenizer(),
    )


@pytest.mark.parametrize("fused", [True, False])
def test_an_ensemble_of_one_is_exactly_that_teacher(tmp_path, fused):
    teacher = make_tiny_llama(seed=1, num_layers=3)
    single = _trainer(tmp_path / "single", teacher, fused_lm_head=fused)
    ensemble = _trainer(tmp_path / "ensemble", [teacher], fused_lm_head=fused)
    assert ensemble.teacher_source.kind == "ensemble"
    batch = next(iter(single.get_train_dataloader()))
    assert torch.equal(single.compute_loss(single.model, batch), ensemble.compute_loss(ensemble.model, batch))


@pytest.mark.parametrize("combine", ["probability", "log_probability"])
@pytest.mark.parametrize("fused", [True, False])
def test_two_teachers_give_the_float64_mixture_loss(tmp_path, fused, combine):
    teachers = [make_tiny_llama(seed=1, num_layers=3), make_tiny_llama(seed=2)]
    trainer = _trainer(
        tmp_path, teachers, fused_lm_head=fused, teacher_ensemble_weights=[3.0, 1.0], teacher_ensemble_combine=combine
    )
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    with torch.no_grad():
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        student = trainer.model(**inputs).logits[:, :-1]
        teacher_logits = [t(**inputs).logits[:, :-1].reshape(-1, 64) for t in teachers]
    targets = batch["labels"][:, 1:].reshape(-1)
    expected = (
        reference_mixture_loss(student.reshape(-1, 64), teacher_logits, (3.0, 1.0), combine, targets, 2.0, 0.5)
        / (targets != IGNORE_INDEX).sum()
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_ensemble_teachers_by_name_from_the_config(tmp_path):
    paths = []
    for seed in (1, 2):
        path = tmp_path / f"teacher{seed}"
        make_tiny_llama(seed=seed).save_pretrained(path)
        make_word_tokenizer().save_pretrained(path)
        paths.append(str(path))
    trainer = _trainer(tmp_path / "run", None, teacher_ensemble=paths, max_steps=1)
    assert trainer.teacher_source.kind == "ensemble" and len(trainer.teacher_source.modules) == 2
    assert all(not p.requires_grad for m in trainer.teacher_source.modules for p in m.parameters())
    trainer.train()
    assert "soft_loss" in next(e for e in trainer.state.log_history if "loss" in e)
