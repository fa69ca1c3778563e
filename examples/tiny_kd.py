"""Smallest end-to-end KD run: a tiny random teacher and student, a few KDTrainer steps, losses printed.

    python examples/tiny_kd.py

Runs in seconds on a CPU; it shows the API, not distillation quality (see recipes/ for real models).
"""

from __future__ import annotations

import random
import tempfile

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hf_distill import KDConfig, KDTrainer


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w3"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def tiny_llama(layers: int, hidden: int, vocab_size: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def main() -> None:
    vocab_size = 128
    rng = random.Random(0)
    # A "language" with structure the teacher can learn: each word is usually followed by word + 1.
    texts = []
    for _ in range(256):
        word = rng.randint(3, vocab_size - 20)
        words = [word + i if rng.random() < 0.9 else rng.randint(3, vocab_size - 1) for i in range(16)]
        texts.append(" ".join(f"w{w}" for w in words))
    data = Dataset.from_dict({"text": texts})
    tokenizer = word_tokenizer(vocab_size)
    common = dict(report_to=[], use_cpu=True, bf16=False, activation_checkpointing=False, save_strategy="no",
                  per_device_train_batch_size=16, logging_steps=10, lr_scheduler_type="constant")  # fmt: skip

    with tempfile.TemporaryDirectory() as out:
        # 1. A teacher: train a 4-layer model briefly on the data with plain cross-entropy (alpha = 0).
        teacher = tiny_llama(4, 128, vocab_size, seed=1)
        KDTrainer(
            model=teacher, teacher_model=tiny_llama(1, 32, vocab_size, seed=9),
            args=KDConfig(output_dir=f"{out}/teacher", max_steps=60, learning_rate=3e-3, alpha=0.0, **common),
            train_dataset=data, processing_class=tokenizer,
        ).train()  # fmt: skip

        # 2. Distil it into a 1-layer student.
        student = tiny_llama(1, 64, vocab_size, seed=2)
        trainer = KDTrainer(
            model=student, teacher_model=teacher,
            args=KDConfig(output_dir=f"{out}/student", max_steps=40, learning_rate=3e-3, temperature=2.0,
                          alpha=0.5, **common),
            train_dataset=data, processing_class=tokenizer,
        )  # fmt: skip
        trainer.train()

    print("\nstep  loss   soft(KL@T)  hard(CE)  teacher_agreement")
    for entry in trainer.state.log_history:
        if "soft_loss" in entry:
            print(
                f"{entry['step']:>4}  {entry['loss']:.3f}  {entry['soft_loss']:.4f}     {entry['hard_loss']:.3f}"
                f"     {entry['teacher_agreement']:.3f}"
            )


if __name__ == "__main__":
    main()
