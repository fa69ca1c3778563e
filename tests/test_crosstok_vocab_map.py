"""Identical-text token pairs across a byte-level and a SentencePiece-style vocabulary."""

from __future__ import annotations

import pytest
from crosstok_tokenizers import byte_level_tokenizer, sentencepiece_tokenizer
from tokenizers import decoders

from hf_distill.crosstok import shared_pairs_from_vocabs, shared_vocab_pairs, token_bytes, vocab_scheme
from hf_distill.crosstok.vocab_map import BYTE_LEVEL, SENTENCEPIECE


def test_byte_level_bytes_agree_with_the_tokenizers_decoder():
    decoder = decoders.ByteLevel()
    alphabet = [chr(c) for c in range(33, 127)] + ["Ġ", "Ċ", "ĉ", "Ã©", "æĹ¥", "ĠðŁĻĤ"]
    for token in alphabet:
        assert token_bytes(token, BYTE_LEVEL).decode("utf-8") == decoder.decode([token])
    assert token_bytes("Ġdef", BYTE_LEVEL) == b" def"
    assert token_bytes("not byte level: \u2581", BYTE_LEVEL) is None


def test_sentencepiece_space_marker_and_byte_fallback():
    assert token_bytes("\u2581def", SENTENCEPIECE) == b" def"
    assert token_bytes("<0x0A>", SENTENCEPIECE) == b"\n"
    assert token_bytes("<0xE6>", SENTENCEPIECE) == bytes([0xE6])
    assert token_bytes("\u2581\u2581", SENTENCEPIECE) == b"  "
    with pytest.raises(ValueError, match="Unknown vocabulary scheme"):
        token_bytes("a", "wordpiece")


def test_duplicate_spellings_pick_the_regular_token_over_byte_fallback():
    student = {"Ġa": 0, "Ċ": 1, "b": 2}
    teacher = {"<0x0A>": 3, "\n": 9, "\u2581a": 4, "c": 5}
    s_ids, t_ids = shared_pairs_from_vocabs(student, teacher, BYTE_LEVEL, SENTENCEPIECE)
    assert sorted(zip(s_ids.tolist(), t_ids.tolist())) == [(0, 4), (1, 9)]


def test_real_pairs_of_trained_tokenizers_decode_to_the_same_text():
    student, teacher = byte_level_tokenizer(), sentencepiece_tokenizer()
    assert (vocab_scheme(student), vocab_scheme(teacher)) == (BYTE_LEVEL, SENTENCEPIECE)
    s_ids, t_ids = shared_vocab_pairs(student, teacher)
    assert s_ids.unique().numel() == s_ids.numel() and t_ids.unique().numel() == t_ids.numel()
    assert not set(s_ids.tolist()) & set(student.all_special_ids)
    assert not set(t_ids.tolist()) & set(teacher.all_special_ids)
    for s, t in zip(s_ids.tolist(), t_ids.tolist()):
        s_text, t_text = student.decode([s]), teacher.decode([t])
        assert s_text == t_text or "\ufffd" in s_text, (s, t, s_text, t_text)

    # Completeness: every regular token text decodable on both sides is paired.
    def texts(tok):
        specials = set(tok.all_special_ids)
        decoded = {tok.decode([i]): i for i in range(len(tok)) if i not in specials}
        return {text for text in decoded if text and "\ufffd" not in text}

    paired = {student.decode([s]) for s in s_ids.tolist()}
    assert texts(student) & texts(teacher) <= paired
    assert len(paired) > 50
