"""One teacher pass for several students gives the same numbers as scoring each model on its own."""

from __future__ import annotations

import math

import pytest
import torch

from hf_distill.evaluation import compute_agreement, compute_perplexity
from hf_distill.recipe.joint_eval import evaluate_against_teacher


@pytest.fixture
def setup():
    from conftest import make_text_dataset, make_tiny_llama, make_word_tokenizer

    tokenizer = make_word_tokenizer(64)
    texts = make_text_dataset(num_rows=5, min_len=6, max_len=30, seed=4)["text"]
    teacher = make_tiny_llama(seed=0).eval()
    students = {"a": make_tiny_llama(seed=1, num_layers=1).eval(), "b": make_tiny_llama(seed=2).eval()}
    return teacher, students, tokenizer, texts


def test_matches_per_model_perplexity_and_agreement(setup):
    teacher, students, tokenizer, texts = setup
    rows = evaluate_against_teacher(
        teacher, students, tokenizer, texts, max_length=8, batch_size=3, show_progress=False
    )
    for name, model in {"teacher": teacher, **students}.items():
        alone = compute_perplexity(model, tokenizer, texts, max_length=8, batch_size=2, show_progress=False)
        assert rows[name]["perplexity"] == pytest.approx(alone["perplexity"], rel=1e-5)
        assert rows[name]["bits_per_byte"] == pytest.approx(alone["bits_per_byte"], rel=1e-5)
    for name, model in students.items():
        alone = compute_agreement(teacher, model, tokenizer, texts, max_length=8, batch_size=2, show_progress=False)
        assert rows[name]["top1_agreement"] == pytest.approx(alone["top1_agreement"])
        assert rows[name]["kl_teacher_student"] == pytest.approx(alone["kl_teacher_student"], rel=1e-5)
    assert "top1_agreement" not in rows["teacher"]


def test_whole_text_reference_in_float64(setup):
    """With windows longer than every text, NLL is the plain sum over each text's next-token log-probs."""
    teacher, students, tokenizer, texts = setup
    rows = evaluate_against_teacher(teacher, {"b": students["b"]}, tokenizer, texts, max_length=64, show_progress=False)
    nll, count, agree = 0.0, 0, 0
    s_rows, t_rows, labels = [], [], []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]])
            s = torch.log_softmax(students["b"](input_ids=ids).logits[0, :-1].double(), -1)
            t = torch.log_softmax(teacher(input_ids=ids).logits[0, :-1].double(), -1)
            nll -= s.gather(-1, ids[0, 1:, None]).sum().item()
            agree += int((s.argmax(-1) == t.argmax(-1)).sum())
            count += ids.shape[1] - 1
            s_rows.append(s)
            t_rows.append(t)
            labels.append(ids[0, 1:])
    assert rows["b"]["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert rows["b"]["top1_agreement"] == pytest.approx(agree / count)
    num_bytes = sum(len(t.encode()) for t in texts)
    assert rows["b"]["bits_per_byte"] == pytest.approx(nll / math.log(2) / num_bytes, rel=1e-5)
    from diagnostics_reference import reference_diagnostics

    s_all, t_all, y = torch.cat(s_rows).numpy(), torch.cat(t_rows).numpy(), torch.cat(labels).numpy()
    student_ref, teacher_ref = reference_diagnostics(s_all, t_all, y), reference_diagnostics(t_all, t_all, y)
    for key, ref_key in [("top5_overlap", "top5_overlap"), ("prob_correlation", "prob_correlation"),
                         ("entropy_bits", "student_entropy_bits"), ("ece", "student_ece")]:  # fmt: skip
        assert rows["b"][key] == pytest.approx(student_ref[ref_key], rel=1e-4, abs=1e-6), key
    assert rows["teacher"]["entropy_bits"] == pytest.approx(teacher_ref["teacher_entropy_bits"], rel=1e-4)
    assert rows["teacher"]["ece"] == pytest.approx(teacher_ref["teacher_ece"], rel=1e-4, abs=1e-6)
