"""Two small, differently built fast tokenizers trained in-process (about a second), for cross-tokenizer tests.

One is byte-level BPE (GPT-2/SmolLM2 style: ``Ġ`` spaces, multi-byte characters split over byte tokens),
the other SentencePiece-style BPE (Gemma/Llama-2 style: ``▁`` spaces, ``<0xHH>`` byte fallback, a BOS
with an empty offset span).
"""

from __future__ import annotations

from functools import cache

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "The quick brown fox jumps over the lazy dog.",
    "for i in range(10):\n\tprint(i)  # tab indented",
    "Ünïcödé text: café, naïve, résumé.",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n",
]

SAMPLES = {
    "code": 'def mul(x, y):\n    """Multiply."""\n    return x * y\n',
    "tabs_and_runs": "if x:\n\t\treturn  {'a':   1}\n\n\n    pass\t# done  ",
    "prose": "The lazy dog sleeps; the quick fox doesn't.  Two spaces, then more.",
    "unicode": "naïve café — 日本語 text 🙂 with émojis ✓ and ß",
}


@cache
def byte_level_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|end|>"]
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>")


@cache
def sentencepiece_tokenizer(vocab_size: int = 340) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok.train_from_iterator(
        CORPUS * 3, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<bos>", *byte_tokens])
    )
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>")
