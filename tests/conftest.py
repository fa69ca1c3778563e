"""Shared fixtures: tiny randomly initialised causal LMs built from configs (no downloads)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM


def make_tiny_llama(
    vocab_size: int = 64,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    seed: int = 0,
    tie_word_embeddings: bool = False,
    **overrides,
) -> LlamaForCausalLM:
    """A small Llama with deterministic random weights; `seed` makes teacher and student differ."""
    overrides.setdefault("max_position_embeddings", 128)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        **overrides,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Random init gives near-uniform logits; scale the head so distributions have real structure.
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model


@pytest.fixture
def tiny_llama():
    """Factory fixture: call it with keyword overrides to build a tiny Llama."""
    return make_tiny_llama


def make_word_tokenizer(vocab_size: int = 64, prefix: str = "w"):
    """A fast word-level tokenizer over tokens `<prefix>3 ... <prefix>{vocab_size-1}` plus pad/bos/eos."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"{prefix}{i}": i for i in range(3, vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=f"{prefix}3"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def make_text_dataset(num_rows: int = 16, vocab_size: int = 64, seed: int = 0, min_len: int = 4, max_len: int = 12):
    """Plain-text rows of varying length so padding and per-token normalisation matter."""
    import random

    from datasets import Dataset

    rng = random.Random(seed)
    texts = []
    for _ in range(num_rows):
        length = rng.randint(min_len, max_len)
        texts.append(" ".join(f"w{rng.randint(3, vocab_size - 1)}" for _ in range(length)))
    return Dataset.from_dict({"text": texts})


def kd_args(output_dir, config_class=None, **overrides):
    """Config (KDConfig by default) with settings for fast deterministic CPU tests."""
    from hf_distill import KDConfig

    config_class = config_class or KDConfig
    values = dict(
        output_dir=str(output_dir),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        logging_steps=1,
        report_to=[],
        bf16=False,
        use_cpu=True,
        activation_checkpointing=False,
        save_strategy="no",
        dataloader_num_workers=0,
        seed=0,
        data_seed=0,
        temperature=2.0,
        alpha=0.5,
        disable_tqdm=True,
    )
    values.update(overrides)
    return config_class(**values)


def reference_kd_loss(student, teacher, batch, temperature, alpha):
    """Mean over target tokens of alpha*T^2*KL(p_T||p_S) + (1-alpha)*CE, float64, from plain model calls.

    Written out independently of hf_distill so trainer tests compare against the textbook formula.
    """
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    labels = batch["labels"][:, 1:]
    s, t = s[:, :-1], t[:, :-1]
    valid = labels != -100
    log_q = torch.log_softmax(s[valid] / temperature, -1)
    log_p = torch.log_softmax(t[valid] / temperature, -1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    ce = -torch.log_softmax(s[valid], -1).gather(1, labels[valid].unsqueeze(1)).squeeze(1)
    return (alpha * temperature**2 * kl + (1 - alpha) * ce).mean()
