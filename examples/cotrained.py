"""One short run per co-trained regime on tiny random models (see docs/cotrained.md).

    python examples/cotrained.py                      # every regime
    python examples/cotrained.py --regime mutual      # one of: mutual, online, mtp

Runs in seconds on a CPU; it shows how each regime is configured, what it logs and what it saves, not quality.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hf_distill import (
    MTPConfig,
    MTPHeads,
    MTPTrainer,
    MutualKDConfig,
    MutualKDTrainer,
    OnlineKDConfig,
    OnlineKDTrainer,
)

VOCAB = 96
REGIMES = ("mutual", "online", "mtp")


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, VOCAB)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w3"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def tiny_llama(layers: int, seed: int, hidden: int = 64) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def texts(rows: int = 64) -> list[str]:
    rng = random.Random(0)
    return [" ".join(f"w{rng.randint(3, VOCAB - 1)}" for _ in range(12)) for _ in range(rows)]


def run(regime: str, out: str, steps: int) -> dict:
    """Train `steps` steps in one regime, export, reload what was saved, and return the last logged terms."""
    common = dict(
        output_dir=f"{out}/{regime}", max_steps=steps, per_device_train_batch_size=8, logging_steps=1, report_to=[],
        use_cpu=True, bf16=False, save_strategy="no", learning_rate=1e-3,
    )  # fmt: skip
    data, tokenizer = Dataset.from_dict({"text": texts()}), word_tokenizer()
    if regime == "mutual":  # two peers next to the student; each learns from the labels and the other two
        trainer = MutualKDTrainer(
            model=tiny_llama(2, seed=0),
            peers=[tiny_llama(2, seed=1), tiny_llama(3, seed=2)],
            args=MutualKDConfig(temperature=2.0, alpha=0.5, peer_learning_rates=[1e-3, 5e-4], **common),
            train_dataset=data,
            processing_class=tokenizer,
        )
        saved = ["peers/peer1", "peers/peer2"]
    elif regime == "online":  # a wider teacher trains on the labels while the student distils from it
        trainer = OnlineKDTrainer(
            model=tiny_llama(2, seed=0),
            teacher_model=tiny_llama(4, seed=1, hidden=128),
            args=OnlineKDConfig(temperature=2.0, alpha=0.5, teacher_learning_rate=2e-3, **common),
            train_dataset=data,
            processing_class=tokenizer,
        )
        saved = ["teacher"]
    else:  # two auxiliary heads predict 2 and 3 tokens ahead, distilled from the main head (no teacher)
        trainer = MTPTrainer(
            model=tiny_llama(2, seed=0),
            args=MTPConfig(mtp_num_heads=2, mtp_ce_weight=0.3, mtp_kd_weight=0.1, mtp_temperature=2.0, **common),
            train_dataset=data,
            processing_class=tokenizer,
        )
        saved = []
    trainer.train()
    output_dir = common["output_dir"]
    trainer.save_model(output_dir)
    # Every saved model is a plain transformers model; the MTP heads load on their own.
    AutoModelForCausalLM.from_pretrained(output_dir)
    for folder in saved:
        AutoModelForCausalLM.from_pretrained(os.path.join(output_dir, folder))
    if regime == "mtp":
        MTPHeads.from_folder(output_dir)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry][-1]
    return {"saved": ["."] + saved, **logged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regime", choices=REGIMES, default=None, help="one regime (default: all)")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        for regime in [args.regime] if args.regime else REGIMES:
            logged = run(regime, out, args.steps)
            terms = " ".join(f"{k}={v:.3g}" for k, v in logged.items() if isinstance(v, float) and k != "epoch")
            print(f"{regime:7s} saved={','.join(logged['saved'])} {terms}")


if __name__ == "__main__":
    main()
