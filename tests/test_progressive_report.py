"""The chain report's numbers against a float64 reference computed from plain model calls."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_tiny_llama, make_word_tokenizer

from hf_distill.progressive.report import FIRST_TEACHER, chain_rows, rows_markdown

TEXTS = ["w5 w9 w11 w7 w30 w31 w12", "w40 w41 w42 w3 w8", "w60 w61 w5 w5 w5 w9 w10 w11 w12 w13"]


def reference(teacher, student, tokenizer):
    """(perplexity, mean KL(teacher || student) per token) over every token of TEXTS, float64, one text at a time."""
    nll, kl, tokens = 0.0, 0.0, 0
    for text in TEXTS:
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]])
        with torch.no_grad():
            s = torch.log_softmax(student(input_ids=ids).logits[0, :-1].double(), -1)
            t = torch.log_softmax(teacher(input_ids=ids).logits[0, :-1].double(), -1)
        targets = ids[0, 1:]
        nll -= s.gather(1, targets[:, None]).sum().item()
        kl += (t.exp() * (t - s)).sum().item()
        tokens += len(targets)
    return math.exp(nll / tokens), kl / tokens


def test_each_stage_is_scored_against_its_own_teacher_and_the_first():
    tokenizer = make_word_tokenizer(64)
    models = {
        FIRST_TEACHER: make_tiny_llama(num_layers=4, seed=0).eval(),
        "a": make_tiny_llama(num_layers=3, seed=1).eval(),
        "b": make_tiny_llama(num_layers=2, seed=2).eval(),
    }
    rows = chain_rows(models, tokenizer, TEXTS, max_length=64, batch_size=2, show_progress=False)
    assert list(rows) == [FIRST_TEACHER, "a", "b"]
    first_ppl, _ = reference(models[FIRST_TEACHER], models[FIRST_TEACHER], tokenizer)
    assert rows[FIRST_TEACHER]["perplexity"] == pytest.approx(first_ppl, rel=1e-5)
    for name, own in (("a", FIRST_TEACHER), ("b", "a")):
        ppl, kl_first = reference(models[FIRST_TEACHER], models[name], tokenizer)
        _, kl_own = reference(models[own], models[name], tokenizer)
        assert rows[name]["perplexity"] == pytest.approx(ppl, rel=1e-5)
        assert rows[name]["first_kl"] == pytest.approx(kl_first, rel=1e-4)
        assert rows[name]["own_kl"] == pytest.approx(kl_own, rel=1e-4)
    assert rows["a"]["own_kl"] == rows["a"]["first_kl"]  # stage 1's own teacher is the first teacher
    assert rows["b"]["own_kl"] != pytest.approx(rows["b"]["first_kl"], rel=1e-3)
    table = rows_markdown(rows, {FIRST_TEACHER: 4, "a": 3, "b": 2})
    assert "| first teacher | 4 |" in table and table.count("\n") == 4
