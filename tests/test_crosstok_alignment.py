"""Alignment of two tokenizations: groups cover identical text, tile the region, and are the finest possible."""

from __future__ import annotations

import pytest
from crosstok_tokenizers import SAMPLES, byte_level_tokenizer, sentencepiece_tokenizer

from hf_distill.crosstok import (
    AlignedExample,
    TokenizedText,
    align_tokens,
    build_alignment,
    covered_characters,
    spans_by_decoding,
    spans_from_ids,
    tokenize_with_spans,
)


def _brute_force_cuts(tokens: TokenizedText, start: int, end: int) -> set[int]:
    """Every position in [start, end] that no text-covering token straddles (region-relative)."""
    spans = [(s, e) for s, e in zip(tokens.starts, tokens.ends) if e > s]
    return {c - start for c in range(start, end + 1) if all(e <= c or s >= c for s, e in spans)}


def _group_text(tokens: TokenizedText, first: int, last: int) -> str:
    """Text covered by tokens [first, last), from their own spans."""
    covering = [i for i in range(first, last) if tokens.ends[i] > tokens.starts[i]]
    return tokens.text[min(tokens.starts[i] for i in covering) : max(tokens.ends[i] for i in covering)]


def _check_groups(student, teacher, groups, s_region, t_region):
    """Independent checks: identical text per group, exact tiling, and cuts = brute-force common cuts."""
    s0, s1 = s_region
    t0, t1 = t_region
    for group in groups:
        piece = student.text[s0 + group.char_start : s0 + group.char_end]
        assert _group_text(student, group.student_start, group.student_end) == piece
        assert _group_text(teacher, group.teacher_start, group.teacher_end) == piece
        assert teacher.text[t0 + group.char_start : t0 + group.char_end] == piece
    for left, right in zip(groups, groups[1:]):
        assert left.char_end == right.char_start
        assert left.student_end <= right.student_start and left.teacher_end <= right.teacher_start
    common = _brute_force_cuts(student, s0, s1) & _brute_force_cuts(teacher, t0, t1)
    boundaries = {g.char_start for g in groups} | {g.char_end for g in groups}
    assert boundaries == common


@pytest.fixture(scope="module")
def tokenizers_pair():
    return byte_level_tokenizer(), sentencepiece_tokenizer()


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_groups_cover_identical_text_and_tile_the_whole_sample(tokenizers_pair, sample):
    student_tok, teacher_tok = tokenizers_pair
    text = SAMPLES[sample]
    student = tokenize_with_spans(student_tok, text)
    teacher = tokenize_with_spans(teacher_tok, text, add_special_tokens=True)
    assert teacher.starts[0] == teacher.ends[0] == 0  # the BOS covers no text
    assert student.input_ids != teacher.input_ids[1:]  # genuinely different tokenizations
    groups = align_tokens(student, teacher)
    _check_groups(student, teacher, groups, (0, len(text)), (0, len(text)))
    assert covered_characters(groups) == len(text)
    assert groups[0].teacher_start == 1  # the empty-span BOS belongs to no group
    # Some groups merge several tokens on one side (split characters, different merges).
    assert any(g.student_end - g.student_start > 1 or g.teacher_end - g.teacher_start > 1 for g in groups)


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_decoding_fallback_gives_the_same_groups_as_offsets(tokenizers_pair, sample):
    student_tok, teacher_tok = tokenizers_pair
    text = SAMPLES[sample]
    student = tokenize_with_spans(student_tok, text)
    teacher = tokenize_with_spans(teacher_tok, text)
    from_offsets = align_tokens(student, teacher)
    decoded_student = spans_by_decoding(student_tok, student.input_ids, text)
    decoded_teacher = spans_by_decoding(teacher_tok, teacher.input_ids, text)
    assert align_tokens(decoded_student, decoded_teacher) == from_offsets


def test_completion_region_with_different_prompts(tokenizers_pair):
    student_tok, teacher_tok = tokenizers_pair
    completion = SAMPLES["code"]
    student_text = "<|user|>\nwrite mul\n<|assistant|>\n" + completion + "<|end|>"
    teacher_text = "Question: write mul\nAnswer:\n" + completion
    s_region = (student_text.index(completion), student_text.index(completion) + len(completion))
    t_region = (len(teacher_text) - len(completion), len(teacher_text))
    student = tokenize_with_spans(student_tok, student_text)
    teacher = tokenize_with_spans(teacher_tok, teacher_text, add_special_tokens=True)
    groups = align_tokens(student, teacher, s_region, t_region)
    _check_groups(student, teacher, groups, s_region, t_region)
    assert covered_characters(groups) == len(completion)
    assert student.starts[groups[0].student_start] == s_region[0]
    assert teacher.starts[groups[0].teacher_start] == t_region[0]
    assert student.ends[groups[-1].student_end - 1] == s_region[1]


def test_tokens_crossing_the_region_edge_are_left_out():
    # "ab|cd": the student has a token "bc" across the region start at 2, the teacher splits there.
    student = TokenizedText("abcdef", (1, 2, 3, 4), (0, 1, 3, 4), (1, 3, 4, 6))
    teacher = TokenizedText("xxcdef", (5, 6, 7, 8), (0, 2, 3, 4), (2, 3, 4, 6))
    groups = align_tokens(student, teacher, (2, 6), (2, 6))
    assert [(g.char_start, g.char_end) for g in groups] == [(1, 2), (2, 4)]
    assert [(g.student_start, g.student_end, g.teacher_start, g.teacher_end) for g in groups] == [
        (2, 3, 2, 3),
        (3, 4, 3, 4),
    ]


def test_trimmed_whitespace_gap_belongs_to_the_next_token():
    # Offsets of "a  b" where the second token "  b" was trimmed to "b" (a gap at 1..3).
    student = TokenizedText("a  b", (1, 2), (0, 3), (1, 4))
    teacher = TokenizedText("a  b", (1, 2, 3), (0, 1, 2), (1, 2, 4))
    groups = align_tokens(student, teacher)
    assert [(g.char_start, g.char_end) for g in groups] == [(0, 1), (1, 4)]
    assert (groups[1].student_start, groups[1].student_end) == (1, 2)
    assert (groups[1].teacher_start, groups[1].teacher_end) == (1, 3)


def test_region_texts_must_match(tokenizers_pair):
    student_tok, teacher_tok = tokenizers_pair
    student = tokenize_with_spans(student_tok, "hello world")
    teacher = tokenize_with_spans(teacher_tok, "hello there")
    with pytest.raises(ValueError, match="differ"):
        align_tokens(student, teacher)


def test_spans_from_collated_ids_survive_separately_tokenized_prompt(tokenizers_pair):
    student_tok, _ = tokenizers_pair
    prompt, completion = "def add(a, b):\n", "    return a + b  # sum"
    prompt_ids = student_tok(prompt)["input_ids"]
    ids = prompt_ids + student_tok(completion)["input_ids"]
    assert list(tokenize_with_spans(student_tok, prompt + completion).input_ids) != ids  # merges differ
    reference = spans_by_decoding(student_tok, ids, prompt + completion)
    assert spans_from_ids(student_tok, ids, split_points=(len(prompt_ids),)) == reference
    assert spans_from_ids(student_tok, ids) == reference  # without the hint: the decoding fallback


def test_build_alignment_rows_predict_each_groups_tokens(tokenizers_pair):
    student_tok, teacher_tok = tokenizers_pair
    texts = [SAMPLES["unicode"], SAMPLES["code"]]
    examples, rows = [], []
    s_len, t_len = 80, 90
    for b, text in enumerate(texts):
        student = tokenize_with_spans(student_tok, text)
        teacher = tokenize_with_spans(teacher_tok, text, add_special_tokens=True)
        s_offset, t_offset = s_len - len(student), b  # left padding on the student side
        examples.append(
            AlignedExample(student.input_ids, teacher.input_ids, align_tokens(student, teacher), s_offset, t_offset)
        )
        s_row = [0] * s_offset + list(student.input_ids)
        t_row = [0] * t_offset + list(teacher.input_ids) + [0] * (t_len - len(teacher) - t_offset)
        rows.append((s_row, t_row))
    alignment = build_alignment(examples, s_len, t_len)
    s_flat = [tok for s_row, _ in rows for tok in s_row]
    t_flat = [tok for _, t_row in rows for tok in t_row]
    # The student's first group starts at its first token: nothing predicts it, so it is dropped.
    assert alignment.dropped_groups == 2
    expected_groups = sum(len(e.groups) for e in examples) - 2
    assert alignment.num_groups == expected_groups
    for g in range(alignment.num_groups):
        assert s_flat[int(alignment.student_row[g]) + 1] == int(alignment.student_first_token[g])
        assert t_flat[int(alignment.teacher_row[g]) + 1] == int(alignment.teacher_first_token[g])
    for chain, flat in ((alignment.student_chain, s_flat), (alignment.teacher_chain, t_flat)):
        for row, token in zip(chain.row.tolist(), chain.token.tolist()):
            assert flat[row + 1] == token
    assert alignment.student_chain.row.numel() == sum(
        g.student_end - g.student_start - 1 for e in examples for g in e.groups[1:]
    )
    with pytest.raises(ValueError, match="do not fit"):
        build_alignment(examples, 10, t_len)
