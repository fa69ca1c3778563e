"""Character spans of tokens, the common ground on which two different tokenizers can be compared.

Fast tokenizers report offsets directly; their quirks are normalised here so that alignment can
rely on simple rules:

* byte-level BPE splits a multi-byte character over several tokens that all report the full
  character's span (spans overlap);
* SentencePiece byte-fallback tokens (``<0xE2>``) likewise report the whole character;
* special tokens added by a post-processor (BOS/EOS) report an empty span ``(0, 0)``;
* ``trim_offsets`` can leave leading whitespace out of a span (a gap between spans).

Tokenizers without offsets (slow/Python tokenizers) fall back to decoding growing prefixes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class TokenizedText:
    """Token ids of ``text`` with each token's character span ``[starts[i], ends[i])`` in ``text``.

    Empty spans (``starts[i] == ends[i]``) mark tokens that cover no text, such as an added BOS.
    """

    text: str
    input_ids: tuple[int, ...]
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def __post_init__(self) -> None:
        if not len(self.input_ids) == len(self.starts) == len(self.ends):
            raise ValueError("TokenizedText needs one (start, end) span per token id.")
        for start, end in zip(self.starts, self.ends):
            if not 0 <= start <= end <= len(self.text):
                raise ValueError(f"Token span ({start}, {end}) lies outside a text of length {len(self.text)}.")

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize_with_spans(tokenizer: Any, text: str, add_special_tokens: bool = False) -> TokenizedText:
    """Tokenize ``text`` with ``tokenizer`` and attach character spans (offsets, else prefix decoding)."""
    if getattr(tokenizer, "is_fast", False):
        encoding = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        offsets = encoding["offset_mapping"]
        ids = encoding["input_ids"]
        return TokenizedText(text, tuple(ids), tuple(s for s, _ in offsets), tuple(e for _, e in offsets))
    ids = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
    return spans_by_decoding(tokenizer, ids, text)


def spans_from_ids(
    tokenizer: Any, input_ids: Sequence[int], text: str | None = None, split_points: Sequence[int] = ()
) -> TokenizedText:
    """Spans for *given* ids (e.g. a collated batch row), whose text is ``decode(ids)`` unless passed.

    Re-tokenizing the text is the fast path. Ids built by concatenating separately tokenized pieces
    (TRL tokenizes prompt and completion apart) usually do not re-tokenize identically as a whole, but
    each piece does: pass the piece boundaries as ``split_points``. Whatever does not re-tokenize
    identically gets spans from prefix decoding instead (slower, always consistent with the ids).
    """
    ids = [int(i) for i in input_ids]
    full_text = decode_exact(tokenizer, ids) if text is None else text
    bounds = [0, *sorted(p for p in split_points if 0 < p < len(ids)), len(ids)]
    pieces = [_piece_spans(tokenizer, ids[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]
    if pieces and "".join(piece.text for piece in pieces) == full_text:
        return _concatenate(pieces)
    return _spans_for_text(tokenizer, ids, full_text)


def _piece_spans(tokenizer: Any, ids: list[int]) -> TokenizedText:
    return _spans_for_text(tokenizer, ids, decode_exact(tokenizer, ids))


def _spans_for_text(tokenizer: Any, ids: list[int], text: str) -> TokenizedText:
    if getattr(tokenizer, "is_fast", False):
        for add_special in (False, True):
            tokenized = tokenize_with_spans(tokenizer, text, add_special_tokens=add_special)
            if list(tokenized.input_ids) == ids:
                return tokenized
    return spans_by_decoding(tokenizer, ids, text)


def _concatenate(pieces: list[TokenizedText]) -> TokenizedText:
    text, ids, starts, ends = "", [], [], []
    for piece in pieces:
        ids.extend(piece.input_ids)
        starts.extend(start + len(text) for start in piece.starts)
        ends.extend(end + len(text) for end in piece.ends)
        text += piece.text
    return TokenizedText(text, tuple(ids), tuple(starts), tuple(ends))


def decode_exact(tokenizer: Any, input_ids: Sequence[int]) -> str:
    """Decode keeping special tokens and spacing exactly as tokenized (no clean-up heuristics)."""
    return tokenizer.decode(list(input_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def spans_by_decoding(tokenizer: Any, input_ids: Sequence[int], text: str) -> TokenizedText:
    """Spans from decoding growing prefixes of ``input_ids``: token i ends where ``decode(ids[:i+1])``
    stops agreeing with ``text``. Quadratic in length, so only a fallback.

    A prefix ending inside a multi-byte character decodes to a replacement character: that token
    then also covers the character, and so does the next one (overlapping spans, as fast tokenizers
    report for byte-level pieces), so alignment never cuts inside the character.
    """
    ids = [int(i) for i in input_ids]
    starts: list[int] = []
    ends: list[int] = []
    complete = 0  # characters fully produced so far
    for i in range(len(ids)):
        decoded = decode_exact(tokenizer, ids[: i + 1])
        now_complete = max(_common_prefix_length(decoded, text), complete)
        partial = (
            len(decoded) > now_complete
            and decoded[now_complete] == _REPLACEMENT
            and now_complete < len(text)
            and text[now_complete] != _REPLACEMENT
        )
        starts.append(complete)
        ends.append(now_complete + 1 if partial else now_complete)
        complete = now_complete
    # A token decoding to nothing at all (rare) joins the token after it rather than forming a cut.
    for i in range(len(ids) - 2, -1, -1):
        if starts[i] == ends[i] and ends[i + 1] > starts[i + 1] == ends[i]:
            ends[i] = ends[i + 1]
    return TokenizedText(text, tuple(ids), tuple(starts), tuple(ends))


def _common_prefix_length(a: str, b: str) -> int:
    limit = min(len(a), len(b))
    i = 0
    while i < limit and a[i] == b[i]:
        i += 1
    return i
