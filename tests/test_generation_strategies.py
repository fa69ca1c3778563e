"""Each decoding strategy and selection rule does what it says, checked against independent references."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_tiny_llama
from test_generation_tokenizer import char_tokenizer

from hf_distill.teachers.generation import generate_teacher_completions
from hf_distill.teachers.generation.config import TeacherGenerationConfig
from hf_distill.teachers.generation.hf import generate_candidates

EOS = 2
PROMPTS = ["def f(x):", "hello world", "a", "(1+2)*3 ="]


@pytest.fixture(scope="module")
def teacher():
    return make_tiny_llama(seed=3).eval()


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def _rows():
    return [{"prompt": p} for p in PROMPTS]


@torch.no_grad()
def _argmax_decode(model, ids: list[int], max_new: int) -> list[int]:
    """Textbook greedy decoding: one unpadded prompt, full forward each step, no cache."""
    out: list[int] = []
    for _ in range(max_new):
        token = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
        if token == EOS:
            break
        out.append(token)
    return out


@torch.no_grad()
def _mean_loglik(model, prompt_ids: list[int], completion_ids: list[int]) -> float:
    """Float64 mean log-probability of ``completion_ids`` after ``prompt_ids``."""
    ids = torch.tensor([prompt_ids + completion_ids])
    logp = model(ids).logits[0].double().log_softmax(-1)
    n = len(prompt_ids)
    return sum(float(logp[n - 1 + i, t]) for i, t in enumerate(completion_ids)) / len(completion_ids)


def test_greedy_equals_argmax_decoding_in_a_padded_batch(teacher, tok, tmp_path):
    config = TeacherGenerationConfig(strategy="greedy", max_new_tokens=10, batch_size=4)
    result = generate_teacher_completions(teacher, tok, _rows(), tmp_path, config, progress=False)
    assert result["prompt_index"] == [0, 1, 2, 3]
    for prompt, completion in zip(PROMPTS, result["completion"]):
        reference = _argmax_decode(teacher, tok(prompt)["input_ids"], 10)
        assert completion == tok.decode(reference, skip_special_tokens=True)
    assert result["messages"][1] == [
        {"role": "user", "content": PROMPTS[1]},
        {"role": "assistant", "content": result["completion"][1]},
    ]


def test_beam_search_finds_the_most_likely_two_token_continuation(teacher, tok):
    """With as many beams as vocabulary entries and no length normalisation, beam search over two steps is exact."""
    prompt = tok("hello")["input_ids"]
    config = TeacherGenerationConfig(strategy="beam", num_beams=64, length_penalty=0.0, max_new_tokens=2)
    (candidate,) = generate_candidates(teacher, tok, [prompt], config, seed=0)[0]
    with torch.no_grad():
        first = teacher(torch.tensor([prompt])).logits[0, -1].double().log_softmax(-1)
        second = teacher(torch.tensor([prompt + [t] for t in range(64)])).logits[:, -1].double().log_softmax(-1)
    totals = first[:, None] + second  # totals[a, b] = log p(a) + log p(b | a)
    totals[EOS, :] = -math.inf  # after EOS the sequence is over...
    best_pair = float(totals.max())
    best = max(best_pair, float(first[EOS]))  # ...so [EOS] alone is a candidate too
    found = candidate.generated_ids
    found_score = float(first[found[0]]) + (float(second[found[0], found[1]]) if len(found) == 2 else 0.0)
    assert found_score == pytest.approx(best, abs=1e-5)
    greedy = _argmax_decode(teacher, prompt, 2)
    greedy_score = float(first[greedy[0]]) + float(second[greedy[0], greedy[1]])
    assert found_score >= greedy_score - 1e-6


def test_sampling_follows_the_tempered_nucleus_distribution(teacher, tok):
    prompt = tok("abc")["input_ids"]
    temperature, top_p, n = 0.7, 0.8, 4000
    config = TeacherGenerationConfig(
        strategy="sample", num_samples=n, temperature=temperature, top_p=top_p, max_new_tokens=1, selection="all"
    )
    candidates = generate_candidates(teacher, tok, [prompt], config, seed=1)[0]
    tokens = [c.generated_ids[0] for c in candidates]
    with torch.no_grad():
        probs = (teacher(torch.tensor([prompt])).logits[0, -1].double() / temperature).softmax(-1)
    # Nucleus: the most probable tokens until their mass reaches top_p (the token crossing it included).
    order = probs.argsort(descending=True)
    mass_before = probs[order].cumsum(0) - probs[order]
    nucleus = order[mass_before < top_p].tolist()
    assert 2 <= len(nucleus) < 64, "the test needs a non-trivial nucleus"
    assert set(tokens) <= set(nucleus)
    renormalised = probs[nucleus] / probs[nucleus].sum()
    for token, p in zip(nucleus, renormalised.tolist()):
        observed = tokens.count(token) / n
        assert abs(observed - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-3, (token, observed, p)


def test_n_samples_give_n_candidates_per_prompt(teacher, tok, tmp_path):
    config = TeacherGenerationConfig(strategy="sample", num_samples=3, max_new_tokens=6, selection="all")
    result = generate_teacher_completions(teacher, tok, _rows(), tmp_path, config, progress=False)
    assert result["prompt_index"] == [i for i in range(4) for _ in range(3)]
    assert result["sample_index"] == [0, 1, 2] * 4
    assert set(result["num_candidates"]) == {3}


def test_loglik_selection_picks_the_candidate_the_teacher_finds_most_likely(teacher, tok, tmp_path):
    base = dict(strategy="sample", num_samples=5, max_new_tokens=6, temperature=1.5, seed=7)
    everything = generate_teacher_completions(
        teacher, tok, _rows(), tmp_path / "all", TeacherGenerationConfig(**base, selection="all"), progress=False
    )
    best = generate_teacher_completions(
        teacher, tok, _rows(), tmp_path / "best", TeacherGenerationConfig(**base, selection="loglik"), progress=False
    )
    assert best["prompt_index"] == [0, 1, 2, 3]
    for index, prompt in enumerate(PROMPTS):
        prompt_ids = tok(prompt)["input_ids"]
        scores = {}
        for row in everything.filter(lambda r, i=index: r["prompt_index"] == i):
            completion_ids = tok(row["completion"], add_special_tokens=False)["input_ids"]
            completion_ids += [EOS] if row["finished"] else []  # no stop sequences: finished means EOS
            scores[row["sample_index"]] = _mean_loglik(teacher, prompt_ids, completion_ids)
        chosen = best[index]
        assert scores[chosen["sample_index"]] == pytest.approx(max(scores.values()), abs=1e-9)
        assert chosen["teacher_score"] == pytest.approx(scores[chosen["sample_index"]], abs=1e-4)
        assert (
            chosen["completion"]
            == everything.filter(
                lambda r, i=index, s=chosen["sample_index"]: r["prompt_index"] == i and r["sample_index"] == s
            )[0]["completion"]
        )


def test_length_limits_keep_exactly_the_candidates_within_them(teacher, tok, tmp_path):
    base = dict(strategy="sample", num_samples=6, max_new_tokens=8, temperature=2.0, seed=3, selection="all")
    everything = generate_teacher_completions(
        teacher, tok, _rows(), tmp_path / "all", TeacherGenerationConfig(**base), progress=False
    )
    limited = generate_teacher_completions(
        teacher,
        tok,
        _rows(),
        tmp_path / "lim",
        TeacherGenerationConfig(**base, min_completion_tokens=2, max_completion_tokens=5),
        progress=False,
    )
    expected = [(r["prompt_index"], r["sample_index"]) for r in everything if 2 <= len(r["completion"]) <= 5]
    assert 0 < len(expected) < len(everything), "the test needs candidates on both sides of the limits"
    assert list(zip(limited["prompt_index"], limited["sample_index"])) == expected


def test_stop_sequences_cut_the_completion_before_the_stop(teacher, tok, tmp_path):
    plain = generate_teacher_completions(
        teacher, tok, _rows(), tmp_path / "plain", TeacherGenerationConfig(max_new_tokens=12), progress=False
    )
    text = plain["completion"][0]
    stop = text[4:6]
    assert len(stop) == 2 and text.find(stop) >= 1
    stopped = generate_teacher_completions(
        teacher,
        tok,
        _rows(),
        tmp_path / "stop",
        TeacherGenerationConfig(max_new_tokens=12, stop_sequences=[stop]),
        progress=False,
    )
    assert stopped["completion"][0] == text[: text.find(stop)]
    assert stopped["finished"][0] is True
    for before, after in zip(plain["completion"], stopped["completion"]):
        assert after == (before[: before.find(stop)] if stop in before else before)


def test_conversational_prompts_use_the_chat_template(teacher, tok, tmp_path):
    messages = [{"role": "user", "content": "hi"}]
    result = generate_teacher_completions(
        teacher, tok, [{"messages": messages}], tmp_path, TeacherGenerationConfig(max_new_tokens=6), progress=False
    )
    rendered = tok("<u>hi\n<a>", add_special_tokens=False)["input_ids"]
    assert result["completion"][0] == [
        {"role": "assistant", "content": tok.decode(_argmax_decode(teacher, rendered, 6), skip_special_tokens=True)}
    ]
    assert result["prompt"][0] == messages
    assert result["messages"][0] == messages + result["completion"][0]
