"""A character-level tokenizer whose vocabulary matches ``make_tiny_llama``'s 64 ids (used by the seqkd tests).

One character is one token, so a test can reason about texts and token ids interchangeably.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789 \n()[]:=+-*/.,_<>'\"#!?")
# A role-tagged template drawn only from in-vocabulary characters.
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'][0] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<a>{% endif %}"
)


def char_tokenizer(vocab_size: int = 64, chat_template: str | None = CHAT_TEMPLATE) -> PreTrainedTokenizerFast:
    """ids 0-3 are <pad> <s> </s> <unk>; then one id per character; BOS is prepended to plain text."""
    tokens = (SPECIALS + CHARS)[:vocab_size]
    if len(tokens) < vocab_size:
        tokens += [f"<extra{i}>" for i in range(vocab_size - len(tokens))]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    from tokenizers.processors import TemplateProcessing

    backend.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t in tokens if t.startswith("<extra")]})
    tokenizer.chat_template = chat_template
    return tokenizer


def test_one_character_is_one_token():
    tok = char_tokenizer()
    assert len(tok) == 64
    ids = tok("ab c")["input_ids"]
    assert ids == [1, 4, 5, CHARS.index(" ") + 4, 6]
    assert tok.decode(ids, skip_special_tokens=True) == "ab c"


def test_chat_template_renders_roles():
    tok = char_tokenizer()
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<u>hi\n<a>"
