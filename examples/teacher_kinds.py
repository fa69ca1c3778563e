"""One short KDTrainer run per kind of teacher, on tiny random models (see docs/teachers.md).

    python examples/teacher_kinds.py                 # every kind
    python examples/teacher_kinds.py --kind ema      # one kind: live, precomputed, cross_tokenizer, ema, ensemble

Runs in seconds on a CPU; it shows how each teacher is configured, not distillation quality.
"""

from __future__ import annotations

import argparse
import random
import tempfile

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hf_distill import KDConfig, KDTrainer, PrecomputeConfig, precompute_teacher_signal

VOCAB = 96


def word_tokenizer(order: int = 1) -> PreTrainedTokenizerFast:
    """Words w3..w95; `order=-1` numbers them backwards: the same words under another tokenizer."""
    words = [f"w{i}" for i in range(3, VOCAB)][::order]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{word: i for i, word in enumerate(words, start=3)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=words[0]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def tiny_llama(layers: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
        max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def texts(rows: int = 64) -> list[str]:
    rng = random.Random(0)
    return [" ".join(f"w{rng.randint(3, VOCAB - 1)}" for _ in range(12)) for _ in range(rows)]


def run(kind: str, out: str, steps: int) -> dict:
    """Train `steps` steps with one kind of teacher and return the last logged terms."""
    tokenizer = word_tokenizer()
    data = Dataset.from_dict({"text": texts()})
    settings = dict(output_dir=f"{out}/{kind}", max_steps=steps, per_device_train_batch_size=8, logging_steps=1,
                    report_to=[], use_cpu=True, bf16=False, save_strategy="no", temperature=2.0, alpha=0.5,
                    learning_rate=1e-3)  # fmt: skip
    teacher: object
    extra: dict = {}
    if kind == "live":  # a frozen model with the student's tokenizer (a name/path works too)
        teacher = tiny_llama(4, seed=1)
    elif kind == "ensemble":  # several such teachers, their probabilities mixed 2:1
        teacher = [tiny_llama(4, seed=1), tiny_llama(3, seed=3)]
        settings.update(teacher_ensemble_weights=[2.0, 1.0], teacher_ensemble_combine="probability")
    elif kind == "ema":  # the student's own moving average (temporal self-distillation)
        teacher = "ema"
        settings.update(ema_decay=0.9)
    elif kind == "cross_tokenizer":  # a teacher with another tokenizer: aligned by text, ULD loss
        teacher = tiny_llama(4, seed=1)
        extra = {"teacher_processing_class": word_tokenizer(order=-1)}
        settings.update(cross_tokenizer=True)
        data = Dataset.from_dict({"prompt": [t[:20] for t in texts()], "completion": [t[20:] for t in texts()]})
    elif kind == "precomputed":  # top-k teacher columns written once; no teacher model while training
        teacher = None
        rows = Dataset.from_dict({"input_ids": [tokenizer(t)["input_ids"] for t in texts()]})
        data = precompute_teacher_signal(
            tiny_llama(4, seed=1), tokenizer, rows, f"{out}/signal", PrecomputeConfig(k=16, temperature=2.0),
            progress=False,
        )  # fmt: skip
    else:
        raise ValueError(f"unknown kind {kind!r}")
    trainer = KDTrainer(
        model=tiny_llama(1, seed=2), teacher_model=teacher, args=KDConfig(**settings), train_dataset=data,
        processing_class=tokenizer, **extra,
    )  # fmt: skip
    trainer.train()
    last = [entry for entry in trainer.state.log_history if "soft_loss" in entry][-1]
    return {"teacher": trainer.teacher_source.describe(), **last}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = ["live", "precomputed", "cross_tokenizer", "ema", "ensemble"]
    parser.add_argument("--kind", choices=kinds, nargs="+", default=kinds)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        results = {kind: run(kind, out, args.steps) for kind in args.kind}
    print(f"\n{'kind':<16} {'loss':>7} {'soft':>8} {'hard':>7} {'agree':>6}  teacher")
    for kind, logs in results.items():
        print(
            f"{kind:<16} {logs['loss']:>7.3f} {logs['soft_loss']:>8.4f} {logs['hard_loss']:>7.3f} "
            f"{logs['teacher_agreement']:>6.3f}  {logs['teacher']}"
        )


if __name__ == "__main__":
    main()
