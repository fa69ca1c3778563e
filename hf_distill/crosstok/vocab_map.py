"""Pairs of token ids that mean the same text in two vocabularies, for the exact-match loss term.

Token *strings* are not comparable across tokenizer families: byte-level BPE writes a leading
space as ``Ġ`` and every byte through a printable stand-in (``é`` is ``Ã©``), SentencePiece writes
``▁`` for a space and ``<0x0A>`` for a raw byte. Both are mapped to the UTF-8 bytes the token
produces, and tokens with identical bytes are paired.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

import torch
from torch import Tensor

BYTE_LEVEL = "byte_level"
SENTENCEPIECE = "sentencepiece"
PLAIN = "plain"
SCHEMES = (BYTE_LEVEL, SENTENCEPIECE, PLAIN)

_SP_SPACE = "\u2581"
_SP_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _byte_level_alphabet() -> dict[str, int]:
    """The printable stand-in character of each byte used by byte-level BPE, inverted (char -> byte).

    Bytes that are printable Latin-1 stand for themselves; the others are shifted past 255 in order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet: dict[str, int] = {chr(b): b for b in printable}
    shift = 0
    for byte in range(256):
        if byte not in alphabet.values():
            alphabet[chr(256 + shift)] = byte
            shift += 1
    return alphabet


_BYTE_LEVEL_INVERSE = _byte_level_alphabet()


def token_bytes(token: str, scheme: str) -> bytes | None:
    """The bytes a vocabulary entry stands for, or None if it is not a valid entry of that scheme."""
    if scheme == BYTE_LEVEL:
        try:
            return bytes(_BYTE_LEVEL_INVERSE[ch] for ch in token)
        except KeyError:
            return None
    if scheme == SENTENCEPIECE:
        byte_match = _SP_BYTE.match(token)
        if byte_match:
            return bytes([int(byte_match.group(1), 16)])
        return token.replace(_SP_SPACE, " ").encode("utf-8")
    if scheme == PLAIN:
        return token.encode("utf-8")
    raise ValueError(f"Unknown vocabulary scheme {scheme!r}; expected one of {SCHEMES}.")


def vocab_scheme(tokenizer: Any) -> str:
    """How the tokenizer spells tokens: read from its decoder (fast tokenizers), else guessed."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = repr(getattr(backend, "decoder", None)) if backend is not None else ""
    if "ByteLevel" in decoder:
        return BYTE_LEVEL
    if "ByteFallback" in decoder or _SP_SPACE in decoder or "Metaspace" in decoder:
        return SENTENCEPIECE
    vocab = tokenizer.get_vocab()
    if any(_SP_SPACE in token for token in vocab):
        return SENTENCEPIECE
    if "Ġ" in "".join(list(vocab)[:5000]):
        return BYTE_LEVEL
    return PLAIN


def shared_pairs_from_vocabs(
    student_vocab: Mapping[str, int],
    teacher_vocab: Mapping[str, int],
    student_scheme: str,
    teacher_scheme: str,
    student_exclude: Collection[int] = frozenset(),
    teacher_exclude: Collection[int] = frozenset(),
) -> tuple[Tensor, Tensor]:
    """Index pairs ``(student_ids, teacher_ids)`` of entries producing identical bytes.

    Each id appears at most once. When several ids of one side produce the same bytes (a token and
    its byte-fallback twin), the lowest id not written as a raw byte ``<0xHH>`` wins.
    """
    student_bytes = _bytes_to_id(student_vocab, student_scheme, student_exclude)
    teacher_bytes = _bytes_to_id(teacher_vocab, teacher_scheme, teacher_exclude)
    shared = sorted(student_bytes.keys() & teacher_bytes.keys(), key=lambda b: student_bytes[b])
    student_ids = torch.tensor([student_bytes[b] for b in shared], dtype=torch.long)
    teacher_ids = torch.tensor([teacher_bytes[b] for b in shared], dtype=torch.long)
    return student_ids, teacher_ids


def _bytes_to_id(vocab: Mapping[str, int], scheme: str, exclude: Collection[int]) -> dict[bytes, int]:
    best: dict[bytes, tuple[bool, int]] = {}
    for token, token_id in vocab.items():
        if token_id in exclude:
            continue
        data = token_bytes(token, scheme)
        if not data:
            continue
        rank = (bool(_SP_BYTE.match(token)), token_id)
        if data not in best or rank < best[data]:
            best[data] = rank
    return {data: rank[1] for data, rank in best.items()}


def shared_vocab_pairs(
    student_tokenizer: Any,
    teacher_tokenizer: Any,
    student_vocab_size: int | None = None,
    teacher_vocab_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Identical-text token pairs of two tokenizers, special tokens excluded.

    Pass the models' logit widths as ``*_vocab_size`` to drop tokenizer entries the models have no
    logit for.
    """
    pairs = []
    for tokenizer, size in ((student_tokenizer, student_vocab_size), (teacher_tokenizer, teacher_vocab_size)):
        vocab = tokenizer.get_vocab()
        if size is not None:
            vocab = {token: token_id for token, token_id in vocab.items() if token_id < size}
        pairs.append((vocab, vocab_scheme(tokenizer), set(getattr(tokenizer, "all_special_ids", []))))
    (s_vocab, s_scheme, s_special), (t_vocab, t_scheme, t_special) = pairs
    return shared_pairs_from_vocabs(s_vocab, t_vocab, s_scheme, t_scheme, s_special, t_special)
