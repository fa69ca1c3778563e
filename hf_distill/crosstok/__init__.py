"""Cross-tokenizer alignment: compare a student and a teacher that tokenize text differently."""

from .alignment import AlignedGroup, align_tokens, covered_characters, token_cuts
from .batch import AlignedExample, CrossTokenAlignment, TokenChain, build_alignment, compact_teacher_rows
from .offsets import TokenizedText, decode_exact, spans_by_decoding, spans_from_ids, tokenize_with_spans
from .vocab_map import shared_pairs_from_vocabs, shared_vocab_pairs, token_bytes, vocab_scheme

__all__ = [
    "AlignedExample",
    "AlignedGroup",
    "CrossTokenAlignment",
    "TokenChain",
    "TokenizedText",
    "align_tokens",
    "build_alignment",
    "compact_teacher_rows",
    "covered_characters",
    "decode_exact",
    "shared_pairs_from_vocabs",
    "shared_vocab_pairs",
    "spans_by_decoding",
    "spans_from_ids",
    "token_bytes",
    "token_cuts",
    "tokenize_with_spans",
    "vocab_scheme",
]
