"""Cross-tokenizer KD step on tiny random models with two different trained tokenizers."""

from __future__ import annotations

import pytest
import torch
from conftest import kd_args, make_tiny_llama
from crosstok_tokenizers import byte_level_tokenizer, sentencepiece_tokenizer

from hf_distill import KDTrainer
from hf_distill.crosstok import TokenizedText, spans_from_ids, tokenize_with_spans

PROMPTS = ["def add(a, b):\n", "for i in range(3):\n", "The quick ", "café "]
COMPLETIONS = ["    return a + b\n", "\tprint(i)  # 日本", "brown fox jumps.", "naïve résumé 🙂"]


def _trainer(tmp_path, **overrides):
    from datasets import Dataset

    student_tok, teacher_tok = byte_level_tokenizer(), sentencepiece_tokenizer()
    student_tok.pad_token = student_tok.eos_token
    dataset = Dataset.from_dict({"prompt": PROMPTS, "completion": COMPLETIONS})
    args = kd_args(tmp_path, **{"alpha": 0.7, "temperature": 1.5, "cross_tokenizer": True, **overrides})
    return KDTrainer(
        model=make_tiny_llama(vocab_size=len(student_tok), seed=0),
        teacher_model=make_tiny_llama(vocab_size=len(teacher_tok), seed=1, num_layers=3),
        teacher_processing_class=teacher_tok,
        teacher_prompt_fn=lambda prompt: "Q: " + prompt.upper(),
        args=args,
        train_dataset=dataset,
        processing_class=student_tok,
    )


def _batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


def test_teacher_view_aligns_exactly_the_completion_text(tmp_path):
    trainer = _trainer(tmp_path)
    batch = _batch(trainer)
    view = trainer.teacher_source.distiller.prepare(batch)
    student_tok, teacher_tok = byte_level_tokenizer(), sentencepiece_tokenizer()
    assert view.aligned_characters == view.completion_characters
    completions = set()
    for b in range(batch["input_ids"].shape[0]):
        real = batch["attention_mask"][b].bool()
        labeled = (batch["labels"][b] != -100) & real
        labeled &= batch["input_ids"][b] != student_tok.eos_token_id
        completions.add(student_tok.decode(batch["input_ids"][b][labeled]))
        teacher_ids = view.teacher_inputs["input_ids"][b][view.teacher_inputs["attention_mask"][b].bool()]
        teacher_text = teacher_tok.decode(teacher_ids[1:])  # after the BOS
        assert teacher_text.startswith("Q: ")  # the teacher's own prompt format
    # TRL may move a boundary character of the prompt into the first completion token; what is
    # labeled (and so distilled) is the completion text up to that character.
    assert all(any(c.endswith(x) or x.endswith(c) for x in COMPLETIONS) for c in completions)
    assert view.aligned_characters == sum(len(c) for c in completions)
    # Teacher rows of the loss are only the needed ones, not the whole teacher batch.
    assert view.teacher_rows.numel() < view.teacher_inputs["input_ids"].numel()


def test_loss_combines_soft_and_hard_terms_with_gradients_for_the_student_only(tmp_path):
    trainer = _trainer(tmp_path)
    batch = _batch(trainer)
    model = trainer.model
    terms = trainer.loss_terms(model, batch)
    # The hard term is the student's own summed CE over its targets, computed independently here.
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    targets = batch["labels"][:, 1:]
    valid = targets != -100
    ce = -torch.log_softmax(logits[:, :-1][valid], -1).gather(1, targets[valid][:, None]).sum()
    assert terms.hard_sum.item() == pytest.approx(ce.item(), rel=1e-5)
    assert int(terms.num_tokens) == int(valid.sum())
    soft_weighted = terms.loss.item() - 0.3 * terms.hard_sum.item()
    assert soft_weighted == pytest.approx(0.7 * 1.5**2 * terms.soft_sum.item(), rel=1e-4)

    # KDTrainer's step is these terms normalised by the number of target tokens.
    step_loss = trainer.compute_loss(model, batch)
    assert step_loss.item() == pytest.approx(terms.loss.item() / int(valid.sum()), rel=1e-5)

    terms.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in trainer.teacher_model.parameters())


@pytest.mark.parametrize("alpha", [0.7, 0.0], ids=["soft-and-hard", "hard-only"])
def test_fused_student_head_gives_the_logits_path_loss_and_gradients(tmp_path, alpha):
    """With the fused head the student's full logits are never formed; the step must not change (with
    alpha = 0 the agreement metric comes from its own chunked projection)."""
    results = {}
    for fused in (True, False):
        trainer = _trainer(tmp_path / str(fused), fused_lm_head=fused, exact_match_weight=0.5, alpha=alpha)
        assert trainer.use_fused_head is fused
        batch = _batch(trainer)
        terms = trainer.loss_terms(trainer.model, batch)
        terms.loss.backward()
        grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
        results[fused] = (terms, grads)
    (fused_terms, fused_grads), (plain_terms, plain_grads) = results[True], results[False]
    for field in ("loss", "soft_sum", "hard_sum", "kl_sum", "top1_agree"):
        torch.testing.assert_close(getattr(fused_terms, field), getattr(plain_terms, field), rtol=1e-5, atol=1e-6)
    assert fused_grads.keys() == plain_grads.keys() and "lm_head.weight" in fused_grads
    for name, grad in plain_grads.items():
        scale = float(grad.abs().max())  # float32 sums in another order: compare relative to the tensor's scale
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_training_on_the_soft_term_reduces_it_on_the_training_batch(tmp_path):
    trainer = _trainer(tmp_path, alpha=1.0, max_steps=4, learning_rate=5e-3)
    batch = _batch(trainer)
    with torch.no_grad():
        before = trainer.loss_terms(trainer.model, batch)
    trainer.train()
    with torch.no_grad():
        after = trainer.loss_terms(trainer.model, batch)
    assert after.soft_sum.item() < 0.9 * before.soft_sum.item()


def test_student_spans_from_collated_ids_match_retokenized_text():
    tok = byte_level_tokenizer()
    text = PROMPTS[1] + COMPLETIONS[1]
    direct = tokenize_with_spans(tok, text)
    rebuilt: TokenizedText = spans_from_ids(tok, direct.input_ids)
    assert rebuilt == direct


def test_missing_teacher_tokenizer_is_a_clear_error(tmp_path):
    from datasets import Dataset

    tok = byte_level_tokenizer()
    tok.pad_token = tok.eos_token
    with pytest.raises(ValueError, match="teacher's tokenizer"):
        KDTrainer(
            model=make_tiny_llama(vocab_size=len(tok), seed=0),
            teacher_model=make_tiny_llama(vocab_size=50, seed=1),
            args=kd_args(tmp_path, cross_tokenizer=True),
            train_dataset=Dataset.from_dict({"prompt": PROMPTS, "completion": COMPLETIONS}),
            processing_class=tok,
        )


def test_without_the_switch_different_tokenizers_are_refused(tmp_path):
    with pytest.raises(ValueError, match="cross_tokenizer=True"):
        _trainer(tmp_path, cross_tokenizer=False)
